//! `cargo xtask bench annotations`: the lesson's first stage (load the COCO
//! JSON, pick each image's largest object, write `lrg.csv` and `bb.csv`) in
//! this project against the lesson's own Python code, on a COCO-sized JSON
//! (120k images, about 900k annotations), in one invocation: both run on the
//! same machine at the same moment, so the ratio is the result.
//!
//! Both sides must write byte-identical CSVs (checked), also on the real VOC
//! 2007 JSON where `../shared/voc2007` is present.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// Size of the generated file (COCO 2017 train: 118k images, 860k boxes).
const IMAGES: u64 = 120_000;
/// Boxes per image are 1..=14, about 7.5 on average.
const MAX_BOXES_PER_IMAGE: u64 = 14;
/// Timed runs per side; the best is reported.
const REPEATS: usize = 3;
/// Bump when the generated file changes, so a stale cached copy is not reused.
const DATA_VERSION: u32 = 1;

/// The lesson's code (fastai dl2 lesson 8 "pascal"), verbatim where possible:
/// only `np.product` became `np.prod` (removed in NumPy 2), and it is wrapped
/// in a function that is timed after the imports.
const LESSON_PY: &str = r#"
import collections, json, sys, time
import numpy as np
import pandas as pd

def lesson(src, out):
    trn_j = json.load(open(src))
    IMAGES,ANNOTATIONS,CATEGORIES = ['images', 'annotations', 'categories']
    FILE_NAME,ID,IMG_ID,CAT_ID,BBOX = 'file_name','id','image_id','category_id','bbox'
    cats = dict((o[ID], o['name']) for o in trn_j[CATEGORIES])
    trn_fns = dict((o[ID], o[FILE_NAME]) for o in trn_j[IMAGES])
    trn_ids = [o[ID] for o in trn_j[IMAGES]]

    def hw_bb(bb): return np.array([bb[1], bb[0], bb[3]+bb[1]-1, bb[2]+bb[0]-1])

    trn_anno = collections.defaultdict(lambda:[])
    for o in trn_j[ANNOTATIONS]:
        if not o['ignore']:
            bb = o[BBOX]
            bb = hw_bb(bb)
            trn_anno[o[IMG_ID]].append((bb,o[CAT_ID]))

    def get_lrg(b):
        if not b: raise Exception()
        b = sorted(b, key=lambda x: np.prod(x[0][-2:]-x[0][:2]), reverse=True)
        return b[0]

    trn_lrg_anno = {a: get_lrg(b) for a,b in trn_anno.items()}

    CSV = out + '/lrg.csv'
    df = pd.DataFrame({'fn': [trn_fns[o] for o in trn_ids],
        'cat': [cats[trn_lrg_anno[o][1]] for o in trn_ids]}, columns=['fn','cat'])
    df.to_csv(CSV, index=False)

    BB_CSV = out + '/bb.csv'
    bb = np.array([trn_lrg_anno[o][0] for o in trn_ids])
    bbs = [' '.join(str(p) for p in o) for o in bb]
    df = pd.DataFrame({'fn': [trn_fns[o] for o in trn_ids], 'bbox': bbs}, columns=['fn','bbox'])
    df.to_csv(BB_CSV, index=False)

src, out, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
times = []
for _ in range(repeats):
    t = time.perf_counter()
    lesson(src, out)
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times}))
"#;

pub fn run(python: &Path) -> Result<()> {
    let root = crate::cache::project_root();
    let data_dir = root.join("target/bench-data");
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let json = data_dir.join(format!("coco-sized-v{DATA_VERSION}.json"));
    if json.is_file() {
        println!("reusing {}", json.display());
    } else {
        let started = Instant::now();
        generate_coco_sized(&json)?;
        println!("generated {} in {:.1?}", json.display(), started.elapsed());
    }
    let size_mb = std::fs::metadata(&json)?.len() as f64 / 1e6;

    let rust_out = data_dir.join("annotations-rust");
    let python_out = data_dir.join("annotations-python");
    for d in [&rust_out, &python_out] {
        std::fs::create_dir_all(d)?;
    }

    let (rust, phases, stats) = time_rust(&json, &rust_out)?;
    let python_times = time_python(python, &json, &python_out, REPEATS)?;
    let python_best = python_times.iter().copied().fold(f64::INFINITY, f64::min);
    same_csvs(&rust_out, &python_out)?;

    println!(
        "annotations benchmark: {IMAGES} images, {} annotations ({} ignore), {size_mb:.0} MB JSON",
        stats.0 + stats.1,
        stats.1
    );
    println!(
        "  this project  (load + largest + lrg.csv + bb.csv), best of {REPEATS}: {:.3} s  [load {:.3} s, largest {:.3} s, csv {:.3} s]",
        rust.as_secs_f64(),
        phases[0].as_secs_f64(),
        phases[1].as_secs_f64(),
        phases[2].as_secs_f64()
    );
    println!(
        "  lesson Python (json.load, defaultdict, get_lrg, pandas to_csv), best of {REPEATS}: {python_best:.3} s  (runs: {})",
        python_times.iter().map(|t| format!("{t:.2}")).collect::<Vec<_>>().join(", ")
    );
    let ratio = python_best / rust.as_secs_f64();
    println!(
        "  CSVs byte-identical: yes; speed-up {ratio:.1}x (goal >= 10x: {})",
        if ratio >= 10.0 { "met" } else { "NOT met" }
    );

    let real = root.join("../shared/voc2007/pascal_train2007.json");
    if real.is_file() {
        let (rust_real, python_real) = (
            data_dir.join("voc2007-rust"),
            data_dir.join("voc2007-python"),
        );
        for d in [&rust_real, &python_real] {
            std::fs::create_dir_all(d)?;
        }
        let (t, _, _) = time_rust(&real, &rust_real)?;
        let p = time_python(python, &real, &python_real, 1)?;
        same_csvs(&rust_real, &python_real)?;
        println!(
            "  real VOC 2007 train JSON: CSVs byte-identical; {:.4} s vs {:.3} s ({:.0}x)",
            t.as_secs_f64(),
            p[0],
            p[0] / t.as_secs_f64()
        );
    } else {
        println!(
            "  (real VOC 2007 JSON not at {}; its identity check skipped)",
            real.display()
        );
    }
    Ok(())
}

/// Best of [`REPEATS`] of the whole stage, with the phases of that run, and
/// (usable, ignored) annotation counts.
fn time_rust(json: &Path, out: &Path) -> Result<(Duration, [Duration; 3], (usize, usize))> {
    let mut best: Option<(Duration, [Duration; 3])> = None;
    let mut counts = (0, 0);
    for _ in 0..REPEATS {
        let t0 = Instant::now();
        let dataset = voc_annotations::load_coco_json(json)?;
        let t1 = Instant::now();
        let largest = largest_object::largest_objects(&dataset)?;
        let t2 = Instant::now();
        largest.write_csvs(&out.join("lrg.csv"), &out.join("bb.csv"))?;
        let t3 = Instant::now();
        counts = (dataset.object_count(), dataset.stats.ignored);
        let total = t3 - t0;
        if best.is_none_or(|(b, _)| total < b) {
            best = Some((total, [t1 - t0, t2 - t1, t3 - t2]));
        }
    }
    let (total, phases) = best.expect("REPEATS > 0");
    Ok((total, phases, counts))
}

fn time_python(python: &Path, json: &Path, out: &Path, repeats: usize) -> Result<Vec<f64>> {
    let output = Command::new(python)
        .arg("-c")
        .arg(LESSON_PY)
        .arg(json)
        .arg(out)
        .arg(repeats.to_string())
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !output.status.success() {
        bail!(
            "the lesson's Python code failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    #[derive(serde::Deserialize)]
    struct Times {
        times: Vec<f64>,
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let times: Times = serde_json::from_str(last)
        .with_context(|| format!("reading the Python timings from {stdout:?}"))?;
    ensure!(
        !times.times.is_empty(),
        "the Python peer reported no timings"
    );
    Ok(times.times)
}

fn same_csvs(a: &Path, b: &Path) -> Result<()> {
    for name in ["lrg.csv", "bb.csv"] {
        let (pa, pb) = (a.join(name), b.join(name));
        let (ta, tb) = (std::fs::read(&pa)?, std::fs::read(&pb)?);
        if ta != tb {
            let line = ta
                .split(|&c| c == b'\n')
                .zip(tb.split(|&c| c == b'\n'))
                .position(|(x, y)| x != y)
                .unwrap_or(0);
            bail!(
                "{} and {} differ (first at line {}: {:?} vs {:?})",
                pa.display(),
                pb.display(),
                line + 1,
                String::from_utf8_lossy(ta.split(|&c| c == b'\n').nth(line).unwrap_or_default()),
                String::from_utf8_lossy(tb.split(|&c| c == b'\n').nth(line).unwrap_or_default()),
            );
        }
    }
    Ok(())
}

/// SplitMix64: a tiny deterministic generator, enough for test data.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Writes a COCO-sized file in the conventions of the lesson's
/// `pascal_train2007.json` (integer `[x, y, w, h]` boxes inside their image,
/// about 15% `ignore`, every image with at least one usable box, small boxes
/// so that equal areas, and so the tie rule, occur), atomically.
fn generate_coco_sized(path: &Path) -> Result<()> {
    let mut rng = SplitMix(2007);
    csv_export::write_atomic(path, |out| {
        out.write_all(b"{\"images\": [")?;
        let mut sizes = Vec::with_capacity(IMAGES as usize);
        for id in 1..=IMAGES {
            let (w, h) = (rng.range(200, 640), rng.range(200, 640));
            sizes.push((w, h));
            let sep = if id == 1 { "" } else { ", " };
            write!(out, "{sep}{{\"file_name\": \"{id:012}.jpg\", \"height\": {h}, \"width\": {w}, \"id\": {id}}}")?;
        }
        out.write_all(b"], \"type\": \"instances\", \"annotations\": [")?;
        let mut ann_id = 0u64;
        for (image_id, &(w, h)) in (1..).zip(&sizes) {
            let boxes = rng.range(1, MAX_BOXES_PER_IMAGE);
            let usable = rng.range(0, boxes - 1); // this one is never ignored
            for k in 0..boxes {
                let (bw, bh) = if rng.range(0, 3) == 0 { (rng.range(1, 12), rng.range(1, 12)) } else { (rng.range(1, w), rng.range(1, h)) };
                let (x, y) = (rng.range(0, w - bw), rng.range(0, h - bh));
                let ignore = u8::from(k != usable && rng.range(0, 99) < 17);
                let category = rng.range(1, 20);
                ann_id += 1;
                let sep = if ann_id == 1 { "" } else { ", " };
                write!(
                    out,
                    "{sep}{{\"segmentation\": [[{x}, {y}, {x}, {y2}, {x2}, {y2}, {x2}, {y}]], \"area\": {area}, \"iscrowd\": 0, \"image_id\": {image_id}, \"bbox\": [{x}, {y}, {bw}, {bh}], \"category_id\": {category}, \"id\": {ann_id}, \"ignore\": {ignore}}}",
                    y2 = y + bh,
                    x2 = x + bw,
                    area = bw * bh
                )?;
            }
        }
        out.write_all(b"], \"categories\": [")?;
        for (id, name) in (1..).zip(voc_annotations::VOC_CLASSES) {
            let sep = if id == 1 { "" } else { ", " };
            write!(out, "{sep}{{\"supercategory\": \"none\", \"id\": {id}, \"name\": \"{name}\"}}")?;
        }
        out.write_all(b"]}")
    })
    .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_range_stays_inside_and_covers_the_ends() {
        let mut rng = SplitMix(1);
        let draws: Vec<u64> = (0..2000).map(|_| rng.range(3, 7)).collect();
        assert!(draws.iter().all(|d| (3..=7).contains(d)));
        assert!(draws.contains(&3) && draws.contains(&7));
    }
}
