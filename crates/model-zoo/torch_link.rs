//! Link settings shared by the build scripts of every crate that links
//! libtorch (model-zoo, trainer). `cargo:rustc-link-arg` only reaches the
//! targets of the package whose build script prints it, so each such package
//! includes this file from its own build.rs.
//!
//! Inputs (set by `cargo xtask torch env` / `xtask::torch::cargo_env`):
//! - `LIBTORCH`: the `torch` package dir of a PyPI torch install
//!   (holding `lib/` and `include/`), as torch-sys expects.
//! - `LESSON8_TORCH_DEVICE`: `cuda` to force-link libtorch_cuda.so, anything
//!   else (or unset) for CPU only.

use std::path::{Path, PathBuf};

pub fn emit() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LESSON8_TORCH_DEVICE");
    let Some(libtorch) = std::env::var_os("LIBTORCH").map(PathBuf::from) else {
        panic!(
            "LIBTORCH is not set. Install libtorch and print the build environment with \
             `cargo xtask torch env` (e.g. `eval \"$(cargo xtask torch env)\"`), then rebuild."
        );
    };
    let torch_lib = libtorch.join("lib");
    if !torch_lib.join("libtorch_cpu.so").exists() {
        panic!(
            "LIBTORCH={} holds no lib/libtorch_cpu.so; run `cargo xtask torch env`",
            libtorch.display()
        );
    }
    for dir in runtime_lib_dirs(&libtorch) {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
    }
    let want_cuda = std::env::var("LESSON8_TORCH_DEVICE").is_ok_and(|d| d == "cuda");
    if want_cuda && torch_lib.join("libtorch_cuda.so").exists() {
        // rustc links with --as-needed, and nothing in tch references a
        // libtorch_cuda symbol directly, so without this the CUDA backend is
        // silently dropped (its static initialisers register the device).
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}

/// `torch/lib` plus every `site-packages/nvidia/*/lib` (libcudart and libcupti
/// are needed even by libtorch_cpu.so; cuDNN, cuBLAS, ... by libtorch_cuda.so).
fn runtime_lib_dirs(libtorch: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![libtorch.join("lib")];
    if let Some(site_packages) = libtorch.parent() {
        if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
            let mut nvidia: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("lib"))
                .filter(|lib| lib.is_dir())
                .collect();
            nvidia.sort();
            dirs.extend(nvidia);
        }
    }
    dirs
}
