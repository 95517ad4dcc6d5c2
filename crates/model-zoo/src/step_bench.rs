//! What the step benchmarks (`examples/bench_step.rs`, trainer's
//! `examples/bench_ssd_step.rs`) share: freezing the body as their PyTorch
//! peers do, timing a step, and printing the lines the peers print, which
//! `cargo xtask bench` parses.

use std::time::Instant;
use tch::nn::VarStore;

use crate::{Net, HEAD_GROUP};

/// Sets `requires_grad` on every body parameter of `net` (running statistics
/// never require grad), as the peers' `p.requires_grad_(train_body)`.
pub fn set_body_trainable(vs: &VarStore, net: &Net, trainable: bool) {
    for (name, var) in vs.variables() {
        if net.group_of(&name) != HEAD_GROUP && !name.contains("running_") {
            let _ = var.shallow_clone().set_requires_grad(trainable);
        }
    }
}

/// Median seconds of `steps` timed runs after one warm-up, as the peers measure.
pub fn median_step_seconds(steps: usize, mut step: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..=steps)
        .map(|_| {
            let started = Instant::now();
            step();
            started.elapsed().as_secs_f64()
        })
        .skip(1)
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// `name  bs=B median step  T ms  X img/s`.
pub fn print_step(name: &str, batch: i64, median: f64) {
    println!(
        "{name:24} bs={batch} median step {:8.1} ms  {:7.1} img/s",
        median * 1e3,
        batch as f64 / median
    );
}

/// `inference  bs=B  T ms  X img/s` for one timed pass.
pub fn print_inference(batch: i64, seconds: f64) {
    println!(
        "{:24} bs={batch} {:8.1} ms  {:7.1} img/s",
        "inference",
        seconds * 1e3,
        batch as f64 / seconds
    );
}
