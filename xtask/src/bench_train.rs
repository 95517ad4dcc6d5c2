//! `cargo xtask bench train`: one training step of the lesson's bbox model
//! (ResNet34 body, Flatten, Linear(25088, 4), L1 loss, Adam; batch 32, 2
//! threads) in Rust (model-zoo's `bench_step` example) beside PyTorch eager
//! (`../shared/bench/peer_train.py`), in one run; `cargo xtask bench ssd` the
//! same for the single-shot detector (trainer's `bench_ssd_step` example beside
//! `scripts/bench/peer_ssd_step.py`).
//!
//! The two sides alternate for a few rounds and each keeps its best figure:
//! on a shared machine the load drifts, and the best of several runs is the
//! figure least disturbed by it.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::project_root;

pub const BATCH: u32 = 32;
pub const STEPS: u32 = 5;
pub const THREADS: u32 = 2;
pub const ROUNDS: u32 = 2;

/// What both programs print, in this order.
const PHASES: [&str; 3] = ["frozen body (head only)", "full fine-tune", "inference"];

/// A peer script of `../shared/bench/` beside the repository, if it is there.
pub fn peer_script(name: &str) -> Result<PathBuf> {
    let script = project_root().join("../shared/bench").join(name);
    if !script.is_file() {
        bail!(
            "{}: the peer benchmark is missing (it comes with ../shared/bench)",
            script.display()
        );
    }
    Ok(script)
}

/// One model's training step, measured on both sides.
pub struct StepBench<'a> {
    /// What the table's title calls the model.
    pub model: &'a str,
    /// The Rust side: a release example that prints the three phase lines.
    pub rust: &'a Path,
    /// The Python side: the peer venv's python and the script's arguments
    /// before `BATCH STEPS THREADS`.
    pub python: &'a Path,
    pub peer_args: Vec<std::ffi::OsString>,
    /// The input side, passed to both after `THREADS` where the model's
    /// programs take one (the detector's); the programs' own default otherwise.
    pub size: Option<u32>,
}

/// Runs both sides and prints images/s and the Rust/PyTorch ratio per phase.
/// `python` must have torch and torchvision (the peer venv); `bench_bin` is
/// `torch::bench_step_binary`'s result.
pub fn run(python: &Path, bench_bin: &Path) -> Result<()> {
    run_step_bench(&StepBench {
        model: "bbox model (ResNet34 body)",
        rust: bench_bin,
        python,
        peer_args: vec![peer_script("peer_train.py")?.into()],
        size: None,
    })
}

/// `bench`'s two sides alternately for [`ROUNDS`] rounds, each keeping its best
/// figure per phase, then the table of images/s and ratios.
pub fn run_step_bench(bench: &StepBench) -> Result<()> {
    let args: Vec<String> = [BATCH, STEPS, THREADS]
        .into_iter()
        .chain(bench.size)
        .map(|v| v.to_string())
        .collect();
    let mut best_rust = BTreeMap::new();
    let mut best_peer = BTreeMap::new();
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}: Rust (tch) ...");
        keep_best(
            &mut best_rust,
            parse(&output(Command::new(bench.rust).args(&args))?)?,
        );
        eprintln!("round {round}/{ROUNDS}: PyTorch eager ...");
        keep_best(
            &mut best_peer,
            parse(&output(
                Command::new(bench.python)
                    .args(&bench.peer_args)
                    .args(&args),
            )?)?,
        );
    }
    let at_size = bench
        .size
        .map(|size| format!(", {size} px"))
        .unwrap_or_default();
    println!(
        "{} step, batch {BATCH}{at_size}, {THREADS} threads, best of {ROUNDS} rounds x {STEPS} steps (images/s)",
        bench.model
    );
    println!(
        "{:26} {:>10} {:>10} {:>7}",
        "phase", "rust", "pytorch", "ratio"
    );
    for phase in PHASES {
        let (rust, peer) = (best_rust[phase], best_peer[phase]);
        println!("{phase:26} {rust:10.1} {peer:10.1} {:6.2}x", rust / peer);
    }
    Ok(())
}

fn keep_best(best: &mut BTreeMap<&'static str, f64>, figures: BTreeMap<&'static str, f64>) {
    for (phase, value) in figures {
        let entry = best.entry(phase).or_insert(value);
        *entry = entry.max(value);
    }
}

/// A command's standard output; its standard error in the error if it failed.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Images/s per phase from lines like
/// `full fine-tune           bs=32 median step  11451.9 ms      2.8 img/s`.
fn parse(text: &str) -> Result<BTreeMap<&'static str, f64>> {
    let mut figures = BTreeMap::new();
    for phase in PHASES {
        let line = text
            .lines()
            .find(|line| line.starts_with(phase))
            .with_context(|| format!("no `{phase}` line in the benchmark's output:\n{text}"))?;
        let value = line
            .strip_suffix("img/s")
            .and_then(|rest| rest.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .with_context(|| format!("no images/s figure in `{line}`"))?;
        figures.insert(phase, value);
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_lines_both_sides_print() {
        let text = "frozen body (head only)  bs=32 median step   3957.9 ms      8.1 img/s\n\
                    full fine-tune           bs=32 median step  11451.9 ms      2.8 img/s\n\
                    inference                bs=32   4316.2 ms      7.4 img/s\n";
        let figures = parse(text).unwrap();
        assert_eq!(figures["frozen body (head only)"], 8.1);
        assert_eq!(figures["full fine-tune"], 2.8);
        assert_eq!(figures["inference"], 7.4);
        let err = parse("inference bs=32 1 ms 2 img/s\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("no `frozen body (head only)` line"), "{err}");
    }
}
