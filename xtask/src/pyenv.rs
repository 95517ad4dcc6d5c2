//! The Python peers that benchmarks run beside this project
//! (`../shared/bench/`): one virtual environment in the cache, made once.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::Command;

use crate::cache::cache_dir;

/// What the peers need (the set-up of `shared/bench/README.md`, plus pandas
/// for the lesson's CSV code).
const PEER_PACKAGES: &[&str] = &[
    "torch==2.13.0",
    "torchvision==0.28.0",
    "numpy",
    "pillow",
    "opencv-python-headless",
    "albumentations",
    "pandas",
];

/// The peer venv's python, installing it first if needed (about 5 GB, a few minutes).
/// `cargo xtask peer-setup`: installs the peers, prints their python.
pub fn print_peer_python() -> Result<()> {
    println!("{}", peer_python()?.display());
    Ok(())
}

pub fn peer_python() -> Result<PathBuf> {
    let venv = cache_dir().join("peer-venv");
    let python = venv.join("bin/python");
    let marker = venv.join(".lesson8-complete");
    if marker.exists() {
        return Ok(python);
    }
    eprintln!("setting up the Python peers in {} (torch, torchvision, opencv, albumentations, pandas; about 5 GB)", venv.display());
    std::fs::create_dir_all(cache_dir())?;
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        // Not --quiet: pip names each download and its size as it goes.
        .args(["-m", "pip", "install", "--disable-pip-version-check"])
        .args(PEER_PACKAGES))?;
    run(Command::new(&python).args([
        "-c",
        "import torch, torchvision, cv2, albumentations, pandas",
    ]))?;
    std::fs::write(&marker, PEER_PACKAGES.join("\n"))?;
    Ok(python)
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
