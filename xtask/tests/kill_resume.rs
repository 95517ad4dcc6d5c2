//! `kill -9` of `cargo xtask pipeline` at random moments, each followed by a rerun,
//! ends in the artifacts of an uninterrupted run, and no torn artifact is ever
//! visible in between: a small bbox pipeline (synthetic set, a tiny network, a few
//! epochs) run by the trainer that `cargo test` built.

use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Instant;

const PIPELINE: &str = r#"
[params]
task = "bbox"
backbone = "tiny-cnn"
random_init = true
size = 32
batch = 8
workers = 1
threads = 1
seed = 7
val_fraction = 0.25
augment = { rotate_deg = 10.0, rotate_p = 0.75, flip_p = 0.5 }

[[stage]]
name = "annotations"
kind = "annotations"
inputs = { json = "{data}/pascal_train2007.json" }
outputs = { lrg = "{out}/lrg.csv", bb = "{out}/bb.csv" }
shared_params = false

[[stage]]
name = "train"
kind = "train"
inputs = { csv = "{out}/bb.csv", images = "{images}" }
outputs = { model = "{out}/models/bbox.safetensors", metrics = "{out}/metrics/bbox.csv" }
params = { schedule = [
  { fit = { lr = 1e-3, cycles = 2, cycle_len = 1, cycle_mult = 2 } },
  { freeze_to = -2 },
  { fit = { lrs = [1e-4, 2e-4, 5e-4], cycles = 1, cycle_len = 3 } },
] }

[[stage]]
name = "predict"
kind = "predict"
inputs = { csv = "{out}/bb.csv", images = "{images}", model = "{out}/models/bbox.safetensors" }
outputs = { predictions = "{out}/predictions/bbox.csv" }
"#;

/// The trainer `cargo test` built beside this package's binary, if it did.
fn trainer() -> Option<PathBuf> {
    let xtask = PathBuf::from(env!("CARGO_BIN_EXE_xtask"));
    let trainer = xtask.with_file_name("trainer");
    if trainer.exists() {
        Some(trainer)
    } else {
        eprintln!(
            "skipped: no trainer binary at {} (`cargo xtask test` builds it; `cargo test -p xtask` alone does not)",
            trainer.display()
        );
        None
    }
}

struct Setup {
    dir: tempfile::TempDir,
    trainer: PathBuf,
}

impl Setup {
    fn pipeline(&self, out: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.arg("pipeline")
            .arg(self.dir.path().join("p.toml"))
            .arg("--data")
            .arg(self.dir.path().join("data"))
            .arg("--out")
            .arg(self.dir.path().join(out))
            .env("LESSON8_TRAINER", &self.trainer)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }
    fn run(&self, out: &str) -> Output {
        let output = self.pipeline(out).output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
    }
}

/// Every file under `dir`, relative, except the runner's bookkeeping and the report
/// (whose timings differ from run to run).
fn artifacts(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().to_path_buf())
        .filter(|p| !p.starts_with(".state") && p != Path::new("report.html"))
        .collect();
    files.sort();
    files
}

/// Drops every `seconds` (wall time) from a JSON value.
fn without_seconds(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.remove("seconds");
            map.values_mut().for_each(without_seconds);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(without_seconds),
        _ => {}
    }
}

/// Whether two artifacts are the same result: byte for byte, except the wall times
/// that the metrics CSV and the model's metadata record.
fn same_result(a: &Path, b: &Path) -> Result<(), String> {
    let (x, y) = (std::fs::read(a).unwrap(), std::fs::read(b).unwrap());
    match a.extension().and_then(|e| e.to_str()) {
        Some("csv") if a.to_string_lossy().contains("metrics") => {
            let strip = |bytes: &[u8]| -> Vec<String> {
                String::from_utf8_lossy(bytes)
                    .lines()
                    .map(|l| {
                        l.rsplit_once(',')
                            .map(|(rest, _)| rest)
                            .unwrap_or(l)
                            .to_string()
                    })
                    .collect()
            };
            (strip(&x) == strip(&y))
                .then_some(())
                .ok_or_else(|| "metrics differ".to_string())
        }
        Some("safetensors") => {
            let (p, q) = (
                safetensors::SafeTensors::deserialize(&x).map_err(|e| format!("torn? {e}"))?,
                safetensors::SafeTensors::deserialize(&y).map_err(|e| format!("torn? {e}"))?,
            );
            let mut names = p.names();
            names.sort();
            let mut other = q.names();
            other.sort();
            if names != other {
                return Err("different tensors".into());
            }
            for name in names {
                if p.tensor(name).unwrap().data() != q.tensor(name).unwrap().data() {
                    return Err(format!("tensor {name} differs"));
                }
            }
            let meta = |bytes: &[u8]| {
                let (_, m) = safetensors::SafeTensors::read_metadata(bytes).unwrap();
                let mut v: serde_json::Value = serde_json::from_str(
                    m.metadata()
                        .as_ref()
                        .and_then(|m| m.get("trainer"))
                        .unwrap(),
                )
                .unwrap();
                without_seconds(&mut v);
                v
            };
            (meta(&x) == meta(&y))
                .then_some(())
                .ok_or_else(|| "model metadata differs".to_string())
        }
        _ => (x == y).then_some(()).ok_or_else(|| "bytes differ".into()),
    }
}

#[test]
fn kill_9_at_random_moments_then_rerun_ends_as_an_uninterrupted_run() {
    let Some(trainer) = trainer() else { return };
    let dir = tempfile::tempdir().unwrap();
    let made = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["data", "synthetic", "--images", "96", "--dir"])
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    std::fs::write(dir.path().join("p.toml"), PIPELINE).unwrap();
    let setup = Setup { dir, trainer };

    let started = Instant::now();
    setup.run("reference");
    let whole = started.elapsed();
    let reference = setup.dir.path().join("reference");
    let expected = artifacts(&reference);
    assert!(expected.len() >= 5, "{expected:?}");

    let killed = setup.dir.path().join("killed");
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let mut kills = 0;
    for round in 0..10 {
        let mut child = setup.pipeline("killed").spawn().unwrap();
        // Within the first half of a whole run's time, so each rerun gets a little
        // further (set-up, annotations, an epoch, a checkpoint write, predict, the
        // commit of outputs) before the next kill.
        let after = whole.mul_f64(rng.random_range(0.05..0.5));
        std::thread::sleep(after);
        if child.try_wait().unwrap().is_none() {
            Command::new("kill")
                .args(["-9", &child.id().to_string()])
                .status()
                .unwrap();
            kills += 1;
        }
        child.wait().unwrap();
        let resumable = killed
            .join(".state/work/train/checkpoint.safetensors")
            .exists();
        eprintln!(
            "round {round}: killed after {after:?}; {} artifacts in place{}",
            artifacts(&killed).len(),
            if resumable {
                ", a training checkpoint to resume"
            } else {
                ""
            }
        );
        // What is visible is complete: each artifact present is the reference's.
        for file in artifacts(&killed) {
            assert!(
                expected.contains(&file),
                "round {round}: unexpected file {}",
                file.display()
            );
            if let Err(why) = same_result(&reference.join(&file), &killed.join(&file)) {
                panic!(
                    "round {round} (killed after {after:?}): {}: {why}",
                    file.display()
                );
            }
        }
    }
    assert!(
        kills >= 3,
        "only {kills} of the runs were still going when killed"
    );
    let last = setup.run("killed");
    eprintln!("{}", String::from_utf8_lossy(&last.stderr));
    assert!(
        String::from_utf8_lossy(&last.stderr).contains("running") || artifacts(&killed) == expected,
        "the last run completes what the kills left"
    );
    assert_eq!(artifacts(&killed), expected);
    for file in &expected {
        if let Err(why) = same_result(&reference.join(file), &killed.join(file)) {
            panic!("after {kills} kills and reruns: {}: {why}", file.display());
        }
    }
}
