//! `map::evaluate` gives the APs of an independent Python reference of the
//! VOC devkit's algorithm (`tests/voc_eval_reference.py`, numpy) on random
//! detections and ground truths made from fixed seeds.
//!
//! The reference runs with the peer venv's Python (`$LESSON8_PEER_PYTHON`,
//! else `<cache>/peer-venv/bin/python` with the cache `$LESSON8_CACHE`,
//! `$XDG_CACHE_HOME/lesson8` or `~/.cache/lesson8`, as the model-zoo parity
//! tests find it); the test skips, saying why, where it is absent.

use std::path::{Path, PathBuf};
use std::process::Command;

use multibox::map::{evaluate, GroundTruth, ScoredBox, VOC_IOU_THRESHOLD};
use serde_json::{json, Value};

fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LESSON8_CACHE") {
        return dir.into();
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lesson8");
    }
    PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| "/tmp".into())).join(".cache/lesson8")
}

fn peer_python() -> Option<PathBuf> {
    let python = std::env::var_os("LESSON8_PEER_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| cache_dir().join("peer-venv/bin/python"));
    if python.exists() {
        Some(python)
    } else {
        eprintln!(
            "skipping: no peer Python at {} (set LESSON8_PEER_PYTHON, or run `cargo xtask test` to install the peers)",
            python.display()
        );
        None
    }
}

/// splitmix64: a fixed, dependency-free stream of numbers for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A random case: images with objects of `classes` classes (the last class
/// only difficult), detections that are jittered copies of objects (some
/// twice, some the object's left half, at IoU exactly 0.5), boxes of other classes' places, and random boxes; scores
/// quantised so that ties happen.
fn random_case(seed: u64, images: usize, classes: usize) -> (Vec<GroundTruth>, Vec<ScoredBox>) {
    let mut rng = Rng(seed);
    let mut truths = Vec::new();
    let mut detections = Vec::new();
    let random_box = |rng: &mut Rng| {
        let (top, left) = (rng.below(400) as f32, rng.below(400) as f32);
        let (h, w) = (1 + rng.below(150), 1 + rng.below(150));
        [top, left, top + h as f32 - 1.0, left + w as f32 - 1.0]
    };
    let score = |rng: &mut Rng| (rng.below(40) as f32) / 40.0 + 0.01;
    for image in 0..images {
        for _ in 0..rng.below(6) {
            let class = rng.below(classes as u64) as usize;
            let bbox = random_box(&mut rng);
            let difficult = class == classes - 1 || rng.unit() < 0.15;
            truths.push(GroundTruth {
                image,
                class,
                bbox,
                difficult,
            });
            let copies = match rng.unit() {
                u if u < 0.25 => 0,
                u if u < 0.85 => 1,
                _ => 2,
            };
            for _ in 0..copies {
                let [top, left, bottom, right] = bbox;
                let (h, w) = (bottom - top + 1.0, right - left + 1.0);
                let jitter =
                    |rng: &mut Rng, extent: f32| ((rng.unit() as f32 - 0.5) * 0.6 * extent).round();
                let (dt, dl) = (jitter(&mut rng, h), jitter(&mut rng, w));
                let (db, dr) = (jitter(&mut rng, h), jitter(&mut rng, w));
                let jittered = if w >= 2.0 && w % 2.0 == 0.0 && rng.unit() < 0.15 {
                    // The left half: IoU exactly 0.5, where `>=` and `>` differ.
                    [top, left, bottom, left + w / 2.0 - 1.0]
                } else {
                    [
                        top + dt,
                        left + dl,
                        (bottom + db).max(top + dt),
                        (right + dr).max(left + dl),
                    ]
                };
                // Now and then the right place with the wrong class.
                let det_class = if rng.unit() < 0.1 {
                    rng.below(classes as u64) as usize
                } else {
                    class
                };
                detections.push(ScoredBox {
                    image,
                    class: det_class,
                    score: score(&mut rng),
                    bbox: jittered,
                });
            }
        }
        for _ in 0..rng.below(4) {
            detections.push(ScoredBox {
                image,
                class: rng.below(classes as u64) as usize,
                score: score(&mut rng),
                bbox: random_box(&mut rng),
            });
        }
    }
    (truths, detections)
}

fn case_json(classes: usize, truths: &[GroundTruth], detections: &[ScoredBox]) -> Value {
    // f32 -> f64 is exact, and serde_json writes f64 so that Python reads the same value.
    let bbox = |b: [f32; 4]| b.map(f64::from).to_vec();
    json!({
        "classes": classes,
        "ground_truths": truths.iter().map(|g| json!({
            "image": g.image, "class": g.class, "bbox": bbox(g.bbox), "difficult": g.difficult,
        })).collect::<Vec<_>>(),
        "detections": detections.iter().map(|d| json!({
            "image": d.image, "class": d.class, "score": f64::from(d.score), "bbox": bbox(d.bbox),
        })).collect::<Vec<_>>(),
    })
}

fn run_reference(python: &Path, input: &Value, dir: &Path) -> Value {
    let input_path = dir.join("cases.json");
    std::fs::write(&input_path, input.to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/voc_eval_reference.py");
    let output = Command::new(python)
        .arg(&script)
        .arg(&input_path)
        .output()
        .unwrap_or_else(|e| panic!("running {} {}: {e}", python.display(), script.display()));
    assert!(
        output.status.success(),
        "{} failed:\n{}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{}: output is not JSON ({e}):\n{}",
            script.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

#[test]
fn per_class_ap_equals_the_python_reference_of_the_devkit() {
    let Some(python) = peer_python() else {
        return;
    };
    let specs = [
        (1u64, 60usize, 5usize),
        (2, 100, 6),
        (3, 40, 3),
        (4, 150, 8),
    ];
    let cases: Vec<(usize, Vec<GroundTruth>, Vec<ScoredBox>)> = specs
        .iter()
        .map(|&(seed, images, classes)| {
            let (truths, detections) = random_case(seed, images, classes);
            (classes, truths, detections)
        })
        .collect();
    let input = json!({
        "iou_threshold": VOC_IOU_THRESHOLD,
        "cases": cases.iter().map(|(c, t, d)| case_json(*c, t, d)).collect::<Vec<_>>(),
    });
    let dir = tempfile::tempdir().unwrap();
    let reference = run_reference(&python, &input, dir.path());

    let (mut compared, mut largest_difference) = (0, 0f64);
    let mut detections_total = 0;
    for (n, (classes, truths, detections)) in cases.iter().enumerate() {
        detections_total += detections.len();
        let ours = evaluate(truths, detections, *classes, VOC_IOU_THRESHOLD).unwrap();
        let theirs = &reference["cases"][n]["classes"];
        // Every case must exercise what the test is about.
        let (tp, fp, ignored) = ours.classes.iter().fold((0, 0, 0), |(t, f, i), c| {
            (t + c.true_positives, f + c.false_positives, i + c.ignored)
        });
        assert!(
            tp > 10 && fp > 10 && ignored > 0,
            "case {n}: tp {tp}, fp {fp}, ignored {ignored}"
        );
        assert_eq!(
            ours.classes[classes - 1].ap_voc07,
            None,
            "case {n}: the difficult-only class"
        );
        for c in &ours.classes {
            for (name, value) in [("ap_voc07", c.ap_voc07), ("ap_all_points", c.ap_all_points)] {
                let reference_value = theirs[c.class][name].as_f64();
                match (value, reference_value) {
                    (Some(a), Some(b)) => {
                        assert!(
                            (a - b).abs() < 1e-6,
                            "case {n} class {}: {name} {a} (Rust) vs {b} (reference)",
                            c.class
                        );
                        compared += 1;
                        largest_difference = largest_difference.max((a - b).abs());
                    }
                    (None, None) => {}
                    other => panic!("case {n} class {}: {name} {other:?}", c.class),
                }
            }
        }
    }
    eprintln!(
        "{compared} APs equal to the reference over {detections_total} detections (largest difference {largest_difference:e})"
    );
    assert!(detections_total > 500, "only {detections_total} detections");
}
