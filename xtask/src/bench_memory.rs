//! `cargo xtask bench memory`: peak memory and speed of training the bbox
//! model on EfficientNet-Lite0 (unfrozen, Adam, batch 64, 2 threads) in Rust
//! (model-zoo's `bench_step lite0`, with the allocator setting the trainer
//! uses) beside PyTorch (`../shared/bench/peer_mem.py`), in one run.
//!
//! Each side runs `ROUNDS` times, alternating; speed keeps the best round and
//! memory the largest peak (the figure a user's machine must hold).

use anyhow::{Context, Result};
use std::path::Path;
use std::process::Command;

use crate::bench_train::{output, peer_script};

pub const BATCH: u32 = 64;
pub const STEPS: u32 = 4;
pub const THREADS: u32 = 2;
pub const ROUNDS: u32 = 2;

/// One side's figures.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Figures {
    images_per_second: f64,
    peak_mb: f64,
}

/// Runs both sides and prints images/s, peak RSS and the Rust/PyTorch ratios.
pub fn run(python: &Path, bench_bin: &Path) -> Result<()> {
    let script = peer_script("peer_mem.py")?;
    let args = [BATCH, STEPS, THREADS].map(|v| v.to_string());
    let (mut rust, mut peer): (Option<Figures>, Option<Figures>) = (None, None);
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}: Rust (tch), {STEPS} steps of batch {BATCH} ...");
        let figures = parse(&output(Command::new(bench_bin).arg("lite0").args(&args))?)?;
        rust = Some(combine(rust, figures));
        eprintln!("round {round}/{ROUNDS}: PyTorch eager ...");
        let figures = parse(&output(Command::new(python).arg(&script).args(&args))?)?;
        peer = Some(combine(peer, figures));
    }
    let (rust, peer) = (rust.expect("ROUNDS > 0"), peer.expect("ROUNDS > 0"));
    println!(
        "Lite0 bbox model, unfrozen, Adam, batch {BATCH}, {THREADS} threads, {ROUNDS} rounds x {STEPS} steps"
    );
    println!("{:22} {:>10} {:>10} {:>7}", "", "rust", "pytorch", "ratio");
    println!(
        "{:22} {:10.1} {:10.1} {:6.2}x",
        "images/s (best)",
        rust.images_per_second,
        peer.images_per_second,
        rust.images_per_second / peer.images_per_second
    );
    println!(
        "{:22} {:10.0} {:10.0} {:6.2}x",
        "peak RSS MB (largest)",
        rust.peak_mb,
        peer.peak_mb,
        rust.peak_mb / peer.peak_mb
    );
    Ok(())
}

fn combine(best: Option<Figures>, new: Figures) -> Figures {
    match best {
        None => new,
        Some(best) => Figures {
            images_per_second: best.images_per_second.max(new.images_per_second),
            peak_mb: best.peak_mb.max(new.peak_mb),
        },
    }
}

/// The figures of the line both sides print:
/// `lite0 bbox unfrozen bs=64: 6.3 img/s, peak RSS 6100 MB`.
fn parse(text: &str) -> Result<Figures> {
    let line = text
        .lines()
        .find(|line| line.starts_with("lite0 bbox unfrozen"))
        .with_context(|| format!("no `lite0 bbox unfrozen` line in:\n{text}"))?;
    let number_before = |unit: &str| -> Result<f64> {
        let (before, _) = line
            .split_once(unit)
            .with_context(|| format!("no `{unit}` in `{line}`"))?;
        before
            .split_whitespace()
            .last()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("no number before `{unit}` in `{line}`"))
    };
    Ok(Figures {
        images_per_second: number_before(" img/s")?,
        peak_mb: number_before(" MB")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_line_both_sides_print() {
        let figures =
            parse("noise\nlite0 bbox unfrozen bs=64: 6.3 img/s, peak RSS 6100 MB\n").unwrap();
        assert_eq!(
            figures,
            Figures {
                images_per_second: 6.3,
                peak_mb: 6100.0
            }
        );
        assert!(parse("lite0 bbox unfrozen bs=64: fast").is_err());
        let merged = combine(
            Some(figures),
            Figures {
                images_per_second: 7.0,
                peak_mb: 5000.0,
            },
        );
        assert_eq!(merged.images_per_second, 7.0);
        assert_eq!(merged.peak_mb, 6100.0);
    }
}
