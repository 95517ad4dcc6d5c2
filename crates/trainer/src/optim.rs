//! Adam with one learning rate per layer group.
//!
//! Written here rather than taken from `tch::nn::Optimizer` because the Learner needs
//! what the libtorch optimiser hides: its moment buffers, to put them in checkpoints
//! so that `--resume` continues with exactly the optimiser state it stopped with, and
//! a parameter list limited to the trainable groups, as fastai 0.7's `LayerOptimizer`
//! builds it (`trainable_params_`), so frozen weights can never move.
//!
//! The update is PyTorch's `torch.optim.Adam` (L2 weight decay added to the gradient,
//! bias-corrected moments), with PyTorch's defaults `betas = (0.9, 0.999)`, `eps = 1e-8`:
//! the lesson sets `learn.opt_fn = optim.Adam` and fastai 0.7 passes no betas, so those
//! are the lesson's values ((0.9, 0.99) is fastai v1's AdamW default, not 0.7's).

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
        Param { name: self.name.clone(), tensor: self.tensor.shallow_clone(), group: self.group }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AdamConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 penalty added to the gradient (fastai 0.7 `wds`, default none).
    pub weight_decay: f64,
}

impl Default for AdamConfig {
    fn default() -> Self {
        AdamConfig { beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

#[derive(Debug)]
struct Slot {
    param: Param,
    exp_avg: Tensor,
    exp_avg_sq: Tensor,
}

#[derive(Debug)]
pub struct Adam {
    slots: Vec<Slot>,
    lrs: Vec<f64>,
    config: AdamConfig,
    steps: u64,
}

impl Adam {
    /// An optimiser over `params`, which must hold only the trainable tensors;
    /// `n_groups` learning rates, all 0 until `set_lrs`.
    pub fn new(params: Vec<Param>, n_groups: usize, config: AdamConfig) -> Adam {
        let slots = params
            .into_iter()
            .map(|param| {
                let exp_avg = param.tensor.zeros_like().detach();
                let exp_avg_sq = param.tensor.zeros_like().detach();
                Slot { param, exp_avg, exp_avg_sq }
            })
            .collect();
        Adam { slots, lrs: vec![0.0; n_groups], config, steps: 0 }
    }

    pub fn set_lrs(&mut self, lrs: &[f64]) {
        assert_eq!(lrs.len(), self.lrs.len(), "one learning rate per layer group");
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

    /// One Adam update of every parameter that has a gradient.
    pub fn step(&mut self) {
        let AdamConfig { beta1, beta2, eps, weight_decay } = self.config;
        self.steps += 1;
        let bias_correction1 = 1.0 - beta1.powi(self.steps as i32);
        let bias_correction2_sqrt = (1.0 - beta2.powi(self.steps as i32)).sqrt();
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
                let _ = slot.exp_avg.lerp_(&grad, 1.0 - beta1);
                let _ = slot.exp_avg_sq.lerp_(&(&grad * &grad), 1.0 - beta2);
                let denom = slot.exp_avg_sq.sqrt() / bias_correction2_sqrt + eps;
                let step_size = self.lrs[slot.param.group] / bias_correction1;
                let _ = slot.param.tensor.addcdiv_(&(&slot.exp_avg * -step_size), &denom);
            }
        });
    }

    /// The moment buffers, named `adam.exp_avg.<var>` / `adam.exp_avg_sq.<var>`, for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(self.slots.len() * 2);
        for slot in &self.slots {
            out.push((format!("adam.exp_avg.{}", slot.param.name), slot.exp_avg.shallow_clone()));
            out.push((format!("adam.exp_avg_sq.{}", slot.param.name), slot.exp_avg_sq.shallow_clone()));
        }
        out
    }

    /// Restores moment buffers saved by `state_tensors` and the step count.
    /// Fails naming the first parameter whose buffers are missing or misshapen.
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, steps: u64) -> Result<(), String> {
        for slot in &mut self.slots {
            for (prefix, buffer) in [("adam.exp_avg.", &mut slot.exp_avg), ("adam.exp_avg_sq.", &mut slot.exp_avg_sq)] {
                let key = format!("{prefix}{}", slot.param.name);
                let saved = tensors.get(&key).ok_or_else(|| format!("optimiser state `{key}` missing"))?;
                if saved.size() != buffer.size() {
                    return Err(format!("optimiser state `{key}` has shape {:?}, expected {:?}", saved.size(), buffer.size()));
                }
                tch::no_grad(|| buffer.copy_(saved));
            }
        }
        self.steps = steps;
        Ok(())
    }
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
        let param = Param { name: "p".into(), tensor: p.shallow_clone(), group: 0 };
        let config = AdamConfig { weight_decay: 0.1, ..Default::default() };
        let mut adam = Adam::new(vec![param], 1, config);
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
}
