//! Adam and SGD with momentum, with one learning rate per layer group.
//!
//! Written here rather than taken from `tch::nn::Optimizer` because the Learner needs
//! what the libtorch optimiser hides: its buffers, to put them in checkpoints
//! so that `--resume` continues with exactly the optimiser state it stopped with, and
//! a parameter list limited to the trainable groups, as fastai 0.7's `LayerOptimizer`
//! builds it (`trainable_params_`), so frozen weights can never move.
//!
//! Both updates are PyTorch's, with L2 weight decay added to the gradient:
//! - `torch.optim.Adam` (bias-corrected moments) with PyTorch's defaults
//!   `betas = (0.9, 0.999)`, `eps = 1e-8`: the lesson's bbox model sets
//!   `learn.opt_fn = optim.Adam` and fastai 0.7 passes no betas, so those are the
//!   lesson's values ((0.9, 0.99) is fastai v1's AdamW default, not 0.7's);
//! - `torch.optim.SGD` with momentum 0.9 (no dampening, not Nesterov): fastai 0.7's
//!   default `opt_fn`, which the lesson's largest-object classifier uses.

use std::collections::HashMap;
use tch::Tensor;

/// One trainable tensor and the layer group it belongs to.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub group: usize,
}

impl Param {
    pub fn shallow_clone(&self) -> Param {
        Param {
            name: self.name.clone(),
            tensor: self.tensor.shallow_clone(),
            group: self.group,
        }
    }
}

/// Which update rule, with its constants.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    Adam { beta1: f64, beta2: f64, eps: f64 },
    Sgd { momentum: f64 },
}

impl Method {
    /// PyTorch's Adam defaults.
    pub const ADAM: Method = Method::Adam {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
    };

    /// The per-parameter buffers the method keeps, by their PyTorch state names.
    fn buffer_names(&self) -> &'static [&'static str] {
        match self {
            Method::Adam { .. } => &["exp_avg", "exp_avg_sq"],
            Method::Sgd { .. } => &["momentum_buffer"],
        }
    }

    /// The checkpoint name of one buffer of `param`: `adam.exp_avg.<var>`,
    /// `sgd.momentum_buffer.<var>`, ...
    fn state_key(&self, buffer: &str, param: &str) -> String {
        let method = match self {
            Method::Adam { .. } => "adam",
            Method::Sgd { .. } => "sgd",
        };
        format!("{method}.{buffer}.{param}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OptimiserConfig {
    pub method: Method,
    /// L2 penalty added to the gradient (fastai 0.7 `wds`, default none).
    pub weight_decay: f64,
}

impl Default for OptimiserConfig {
    fn default() -> Self {
        OptimiserConfig {
            method: Method::ADAM,
            weight_decay: 0.0,
        }
    }
}

#[derive(Debug)]
struct Slot {
    param: Param,
    /// `Method::buffer_names`, in that order, zero at the start: SGD's first step then
    /// sets the momentum buffer to the gradient, as PyTorch's does.
    buffers: Vec<Tensor>,
}

#[derive(Debug)]
pub struct Optimiser {
    slots: Vec<Slot>,
    lrs: Vec<f64>,
    config: OptimiserConfig,
    steps: u64,
}

impl Optimiser {
    /// An optimiser over `params`, which must hold only the trainable tensors;
    /// `n_groups` learning rates, all 0 until `set_lrs`.
    pub fn new(params: Vec<Param>, n_groups: usize, config: OptimiserConfig) -> Optimiser {
        let n_buffers = config.method.buffer_names().len();
        let slots = params
            .into_iter()
            .map(|param| {
                let buffers = (0..n_buffers)
                    .map(|_| param.tensor.zeros_like().detach())
                    .collect();
                Slot { param, buffers }
            })
            .collect();
        Optimiser {
            slots,
            lrs: vec![0.0; n_groups],
            config,
            steps: 0,
        }
    }

    pub fn set_lrs(&mut self, lrs: &[f64]) {
        assert_eq!(
            lrs.len(),
            self.lrs.len(),
            "one learning rate per layer group"
        );
        self.lrs.copy_from_slice(lrs);
    }

    pub fn lrs(&self) -> &[f64] {
        &self.lrs
    }

    pub fn steps(&self) -> u64 {
        self.steps
    }

    pub fn zero_grad(&mut self) {
        for slot in &mut self.slots {
            slot.param.tensor.zero_grad();
        }
    }

    /// One update of every parameter that has a gradient.
    pub fn step(&mut self) {
        let OptimiserConfig {
            method,
            weight_decay,
        } = self.config;
        self.steps += 1;
        // Adam's bias corrections depend on the step count alone.
        let (bias_correction1, bias_correction2_sqrt) = match method {
            Method::Adam { beta1, beta2, .. } => (
                1.0 - beta1.powi(self.steps as i32),
                (1.0 - beta2.powi(self.steps as i32)).sqrt(),
            ),
            Method::Sgd { .. } => (1.0, 1.0),
        };
        tch::no_grad(|| {
            for slot in &mut self.slots {
                let grad = slot.param.tensor.grad();
                if !grad.defined() {
                    continue;
                }
                let grad = if weight_decay != 0.0 {
                    grad + &slot.param.tensor * weight_decay
                } else {
                    grad
                };
                let lr = self.lrs[slot.param.group];
                match (method, slot.buffers.as_mut_slice()) {
                    (Method::Adam { beta1, beta2, eps }, [exp_avg, exp_avg_sq]) => {
                        let _ = exp_avg.lerp_(&grad, 1.0 - beta1);
                        let _ = exp_avg_sq.lerp_(&(&grad * &grad), 1.0 - beta2);
                        let denom = exp_avg_sq.sqrt() / bias_correction2_sqrt + eps;
                        let _ = slot
                            .param
                            .tensor
                            .addcdiv_(&(&*exp_avg * (-lr / bias_correction1)), &denom);
                    }
                    (Method::Sgd { momentum }, [buffer]) => {
                        // buf = momentum * buf + grad; from a zero buffer the first step gives
                        // buf = grad, PyTorch's initialisation.
                        let _ = buffer.g_mul_scalar_(momentum).g_add_(&grad);
                        let _ = slot.param.tensor.g_add_(&(&*buffer * -lr));
                    }
                    _ => unreachable!("buffers are made by Optimiser::new for the method"),
                }
            }
        });
    }

    /// The buffers under their `Method::state_key` names, for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let method = self.config.method;
        let mut out = Vec::with_capacity(self.slots.len() * method.buffer_names().len());
        for slot in &self.slots {
            for (buffer, name) in slot.buffers.iter().zip(method.buffer_names()) {
                out.push((
                    method.state_key(name, &slot.param.name),
                    buffer.shallow_clone(),
                ));
            }
        }
        out
    }

    /// Restores buffers saved by `state_tensors` and the step count. Fails naming
    /// the first parameter whose buffers are missing (another method's checkpoint)
    /// or misshapen.
    pub fn load_state(
        &mut self,
        tensors: &HashMap<String, Tensor>,
        steps: u64,
    ) -> Result<(), StateError> {
        let method = self.config.method;
        for slot in &mut self.slots {
            for (buffer, name) in slot.buffers.iter_mut().zip(method.buffer_names()) {
                let key = method.state_key(name, &slot.param.name);
                let saved = tensors
                    .get(&key)
                    .ok_or_else(|| StateError::Missing { key: key.clone() })?;
                if saved.size() != buffer.size() {
                    return Err(StateError::Shape {
                        key,
                        saved: saved.size(),
                        expected: buffer.size(),
                    });
                }
                tch::no_grad(|| buffer.copy_(saved));
            }
        }
        self.steps = steps;
        Ok(())
    }
}

/// A checkpoint's optimiser buffers that do not fit the optimiser.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another method's checkpoint (SGD's has no second moments).
    #[error("optimiser state `{key}` missing")]
    Missing { key: String },
    #[error("optimiser state `{key}` has shape {saved:?}, expected {expected:?}")]
    Shape {
        key: String,
        saved: Vec<i64>,
        expected: Vec<i64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    /// Two steps on f(p) = sum(p^2 * c), compared with the Adam formula evaluated by hand.
    #[test]
    fn matches_the_adam_formula() {
        let p = Tensor::from_slice(&[1.0f64, -2.0]).set_requires_grad(true);
        let c = Tensor::from_slice(&[3.0f64, 0.5]);
        let param = Param {
            name: "p".into(),
            tensor: p.shallow_clone(),
            group: 0,
        };
        let config = OptimiserConfig {
            method: Method::ADAM,
            weight_decay: 0.1,
        };
        let mut adam = Optimiser::new(vec![param], 1, config);
        adam.set_lrs(&[0.01]);

        let (b1, b2, eps, wd, lr) = (0.9f64, 0.999f64, 1e-8, 0.1, 0.01);
        let mut want = [1.0f64, -2.0];
        let mut m = [0.0f64; 2];
        let mut v = [0.0f64; 2];
        let cs = [3.0, 0.5];
        for t in 1..=2 {
            adam.zero_grad();
            (&p * &p * &c).sum(Kind::Double).backward();
            adam.step();
            for k in 0..2 {
                let g = 2.0 * want[k] * cs[k] + wd * want[k];
                m[k] = b1 * m[k] + (1.0 - b1) * g;
                v[k] = b2 * v[k] + (1.0 - b2) * g * g;
                let denom = v[k].sqrt() / (1.0 - b2.powi(t)).sqrt() + eps;
                want[k] -= lr / (1.0 - b1.powi(t)) * m[k] / denom;
            }
        }
        let got: Vec<f64> = Vec::try_from(p.detach().to_device(Device::Cpu)).unwrap();
        for k in 0..2 {
            assert!((got[k] - want[k]).abs() < 1e-12, "{got:?} vs {want:?}");
        }
    }

    /// Three steps of SGD with momentum against PyTorch's update by hand, then the
    /// same from a state saved after the first step: resuming changes nothing.
    #[test]
    fn matches_the_sgd_momentum_formula_and_resumes_exactly() {
        let (momentum, wd, lr, cs) = (0.9f64, 0.01, 0.05, [3.0f64, 0.5]);
        let config = OptimiserConfig {
            method: Method::Sgd { momentum },
            weight_decay: wd,
        };
        let c = Tensor::from_slice(&cs);
        let make = |start: &[f64]| {
            let p = Tensor::from_slice(start).set_requires_grad(true);
            let mut sgd = Optimiser::new(
                vec![Param {
                    name: "p".into(),
                    tensor: p.shallow_clone(),
                    group: 0,
                }],
                1,
                config,
            );
            sgd.set_lrs(&[lr]);
            (p, sgd)
        };
        let step = |p: &Tensor, sgd: &mut Optimiser| {
            sgd.zero_grad();
            (p * p * &c).sum(Kind::Double).backward();
            sgd.step();
        };
        let values = |p: &Tensor| Vec::<f64>::try_from(p.detach().to_device(Device::Cpu)).unwrap();

        let (p, mut sgd) = make(&[1.0, -2.0]);
        let (mut want, mut buf) = ([1.0f64, -2.0], [0.0f64; 2]);
        let mut after_first = None;
        for t in 1..=3 {
            step(&p, &mut sgd);
            for k in 0..2 {
                let g = 2.0 * want[k] * cs[k] + wd * want[k];
                buf[k] = if t == 1 { g } else { momentum * buf[k] + g };
                want[k] -= lr * buf[k];
            }
            let got = values(&p);
            for k in 0..2 {
                assert!(
                    (got[k] - want[k]).abs() < 1e-12,
                    "step {t}: {got:?} vs {want:?}"
                );
            }
            if t == 1 {
                let state: HashMap<String, Tensor> = sgd
                    .state_tensors()
                    .into_iter()
                    .map(|(k, v)| (k, v.copy()))
                    .collect();
                assert_eq!(state.keys().collect::<Vec<_>>(), ["sgd.momentum_buffer.p"]);
                after_first = Some((got, state, sgd.steps()));
            }
        }

        let (start, state, steps) = after_first.unwrap();
        let (q, mut resumed) = make(&start);
        resumed.load_state(&state, steps).unwrap();
        step(&q, &mut resumed);
        step(&q, &mut resumed);
        assert_eq!(
            values(&q),
            values(&p),
            "resumed from step 1, two more steps"
        );

        let mut adam = Optimiser::new(
            vec![Param {
                name: "p".into(),
                tensor: q,
                group: 0,
            }],
            1,
            OptimiserConfig::default(),
        );
        let e = adam.load_state(&state, steps).unwrap_err();
        assert!(e.to_string().contains("adam.exp_avg.p"), "{e}");
    }
}
