//! One training step of the lesson's bbox model (ResNet34 body, Flatten,
//! Linear(25088, 4), L1 loss, Adam), the Rust side of `cargo xtask bench train`;
//! mirrors ../shared/bench/peer_train.py and prints the same lines.
//! With `lite0` first: the bbox model on EfficientNet-Lite0, unfrozen, as
//! ../shared/bench/peer_mem.py measures it (speed and peak memory), the Rust
//! side of `cargo xtask bench memory`.
//!
//! usage: bench_step [lite0] [BATCH] [STEPS] [THREADS]

use model_zoo::step_bench::{median_step_seconds, print_inference, print_step, set_body_trainable};
use model_zoo::{Arch, HeadSpec, Net};
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};

fn main() {
    let tensor_memory = model_zoo::configure_tensor_memory();
    eprintln!("tensor memory: {tensor_memory}");
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let lite0 = args.first().is_some_and(|a| a == "lite0");
    if lite0 {
        args.remove(0);
    }
    let args: Vec<i64> = args
        .iter()
        .map(|a| a.parse().expect("BATCH STEPS THREADS are integers"))
        .collect();
    let batch = args.first().copied().unwrap_or(64);
    let steps = args.get(1).copied().unwrap_or(if lite0 { 4 } else { 5 }) as usize;
    tch::set_num_threads(args.get(2).copied().unwrap_or(2) as i32);
    if lite0 {
        return lite0_unfrozen(batch, steps);
    }

    let BboxBench { vs, net, x, y } = BboxBench::new(Arch::ResNet34, batch);
    // Head only: the body runs frozen, in eval mode and without autograd.
    set_body_trainable(&vs, &net, false);
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let head_only = median_step_seconds(steps, || {
        opt.zero_grad();
        let features = tch::no_grad(|| net.features(&x, &[false, false]));
        let loss = net
            .head_forward(&features, true)
            .l1_loss(&y, tch::Reduction::Mean);
        loss.backward();
        opt.step();
    });
    print_step("frozen body (head only)", batch, head_only);

    set_body_trainable(&vs, &net, true);
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let full = median_step_seconds(steps, || {
        opt.zero_grad();
        let loss = net
            .forward(&x, &[true, true, true])
            .l1_loss(&y, tch::Reduction::Mean);
        loss.backward();
        opt.step();
    });
    print_step("full fine-tune", batch, full);

    let started = Instant::now();
    let _ = tch::no_grad(|| net.forward(&x, &[false; 3]));
    print_inference(batch, started.elapsed().as_secs_f64());
}

/// The lesson's bbox model on `arch` (Flatten, Linear to 4 numbers) with a
/// random batch of 224 px images and boxes, as the peers build it.
struct BboxBench {
    vs: nn::VarStore,
    net: Net,
    x: Tensor,
    y: Tensor,
}

impl BboxBench {
    fn new(arch: Arch, batch: i64) -> Self {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = Net::new(
            &vs.root(),
            arch,
            HeadSpec::FlattenLinear { outputs: 4 },
            224,
        );
        let x = Tensor::randn([batch, 3, 224, 224], (Kind::Float, Device::Cpu));
        let y = Tensor::rand([batch, 4], (Kind::Float, Device::Cpu)) * 224.0;
        Self { vs, net, x, y }
    }
}

/// peer_mem.py's measurement: Lite0 body + the bbox head, every layer
/// trainable, Adam, random inputs; median images/s and the peak RSS.
fn lite0_unfrozen(batch: i64, steps: usize) {
    let BboxBench { vs, net, x, y } = BboxBench::new(Arch::EfficientNetLite0, batch);
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let median = median_step_seconds(steps, || {
        opt.zero_grad();
        let loss = net
            .forward(&x, &[true; 3])
            .l1_loss(&y, tch::Reduction::Mean);
        loss.backward();
        opt.step();
    });
    println!(
        "lite0 bbox unfrozen bs={batch}: {:.1} img/s, peak RSS {:.0} MB",
        batch as f64 / median,
        peak_rss_mb()
    );
}

/// `ru_maxrss` of this process in MB (as the peer reports it).
fn peak_rss_mb() -> f64 {
    // SAFETY: a zeroed rusage is valid for getrusage to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    usage.ru_maxrss as f64 / 1024.0
}
