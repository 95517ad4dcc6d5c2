//! `cargo xtask bench predict`: `cargo xtask predict`'s speed on the first 1000 VOC
//! train images, decoding included, beside PyTorch inference of the same network and
//! batch with its own DataLoader (`scripts/bench/peer_predict.py`), in one run.
//!
//! Each side runs `ROUNDS` times, alternating; the best round of each is compared.

use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::Command;

use crate::bench_train::{output, peer_script};
use crate::cache::project_root;

pub const IMAGES: usize = 1000;
pub const BATCH: usize = 32;
/// Torch threads and decoding workers, on each side.
pub const THREADS: usize = 2;
pub const ROUNDS: usize = 2;

pub fn run(python: &Path, trainer: &Path, model: &Path) -> Result<()> {
    let voc = project_root().join("../shared/voc2007/VOCdevkit/VOC2007");
    let list = voc.join("ImageSets/Main/train.txt");
    if !list.is_file() {
        bail!(
            "{} is absent: the predict benchmark needs the shared VOC 2007 data",
            list.display()
        );
    }
    let files = crate::bench_loader::first_existing(&list, &voc.join("JPEGImages"), IMAGES)?;
    let work = tempfile::tempdir()?;
    let images = work.path().join("images.json");
    csv_export::write_bytes_atomic(&images, &serde_json::to_vec(&files)?)?;
    let shared = peer_script("ref_lesson.py")?;
    let shared = shared.parent().context("the peer folder")?;
    let peer = project_root().join("scripts/bench/peer_predict.py");
    println!(
        "predict benchmark: {} VOC images, batch {BATCH}, {THREADS} threads, model {}",
        files.len(),
        model.display()
    );
    let (mut rust, mut torch) = (0f64, 0f64);
    for round in 1..=ROUNDS {
        eprintln!("round {round}/{ROUNDS}: Rust (trainer predict) ...");
        // The trainer says its speed on stderr (stdout is for the answers).
        let text = stderr_of(
            Command::new(trainer)
                .arg("predict")
                .arg("--model")
                .arg(model)
                .arg("--images")
                .arg(&images)
                .arg("--out")
                .arg(work.path().join("out.jsonl"))
                .args(["--batch", &BATCH.to_string()])
                .args(["--threads", &THREADS.to_string()])
                .env("RUST_LOG", "warn"),
        )?;
        rust = rust.max(images_per_second(&text, "predicted ")?);
        eprintln!("round {round}/{ROUNDS}: PyTorch (DataLoader + inference_mode) ...");
        let text = output(
            Command::new(python)
                .arg(&peer)
                .arg(shared)
                .arg(&images)
                .args([BATCH, THREADS, THREADS].map(|v| v.to_string())),
        )?;
        torch = torch.max(images_per_second(&text, "predict lite0 bbox")?);
    }
    println!("{:34} {:>10}", "", "images/s");
    println!("{:34} {rust:10.1}", "Rust: cargo xtask predict (trainer)");
    println!("{:34} {torch:10.1}", "PyTorch: DataLoader + eval model");
    println!("{:34} {:9.2}x", "ratio (best round of each)", rust / torch);
    Ok(())
}

fn stderr_of(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        bail!("{cmd:?} failed with {}:\n{stderr}", out.status);
    }
    Ok(stderr)
}

/// The number before `images/s` or `img/s` on the line starting with `prefix`.
fn images_per_second(text: &str, prefix: &str) -> Result<f64> {
    let line = text
        .lines()
        .find(|l| l.starts_with(prefix))
        .with_context(|| format!("no line starting {prefix:?} in:\n{text}"))?;
    let (before, _) = line
        .split_once(" images/s")
        .or_else(|| line.split_once(" img/s"))
        .with_context(|| format!("no images/s in {line:?}"))?;
    before
        .rsplit(|c: char| c == ' ' || c == '(')
        .next()
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no number before images/s in {line:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_sides_figures() {
        let rust =
            "model...\npredicted 1000 images in 50.00 s (20.0 images/s, decoding included)\n";
        assert_eq!(images_per_second(rust, "predicted ").unwrap(), 20.0);
        let torch = "predict lite0 bbox bs=32: 17.5 img/s (1000 images in 57.1 s)\n";
        assert_eq!(
            images_per_second(torch, "predict lite0 bbox").unwrap(),
            17.5
        );
        assert!(images_per_second("nothing", "predicted ").is_err());
    }
}
