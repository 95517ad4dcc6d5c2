//! Small synthetic JPEGs for the stage tests: one coloured rectangle per image (its
//! colour the class, its extent the box), with their lrg.csv, bb.csv, lrg_bb.csv, mbb.csv and
//! mbb_classes.csv, and stage specs
//! over them.

use image::{Rgb, RgbImage};
use pipeline::StageSpec;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

pub const COLOURS: [(&str, [u8; 3]); 3] = [
    ("blue", [30, 60, 230]),
    ("green", [40, 200, 60]),
    ("red", [230, 40, 40]),
];
/// Original images are 64 high and 80 wide, so boxes must be mapped back per axis.
pub const H: u32 = 64;
pub const W: u32 = 80;

pub struct Fixture {
    dir: tempfile::TempDir,
    pub boxes: Vec<(String, [f32; 4])>,
}

impl Fixture {
    pub fn new(n: usize) -> Fixture {
        Fixture::with_seed(n, 5)
    }

    /// `n` images drawn from `seed`: another seed gives images no model has seen.
    pub fn with_seed(n: usize, seed: u64) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(&images).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let (mut lrg, mut bb, mut boxes) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..n {
            let (name, colour) = COLOURS[rng.random_range(0..3)];
            let h = rng.random_range(H / 4..H * 3 / 4);
            let w = rng.random_range(W / 4..W * 3 / 4);
            let top = rng.random_range(0..H - h);
            let left = rng.random_range(0..W - w);
            let mut img = RgbImage::new(W, H);
            for (x, y, px) in img.enumerate_pixels_mut() {
                let inside = y >= top && y < top + h && x >= left && x < left + w;
                let base = if inside { colour } else { [120, 120, 120] };
                *px = Rgb(base.map(|c| (c as i32 + rng.random_range(-20..20)).clamp(0, 255) as u8));
            }
            let file = format!("{i:06}.jpg");
            img.save(images.join(&file)).unwrap();
            let bbox = [
                top as f32,
                left as f32,
                (top + h - 1) as f32,
                (left + w - 1) as f32,
            ];
            lrg.push(csv_export::LrgRow {
                file_name: file.clone(),
                category: name.into(),
            });
            bb.push(csv_export::BbRow {
                file_name: file.clone(),
                bbox,
            });
            boxes.push((file, bbox));
        }
        csv_export::write_lrg(&dir.path().join("lrg.csv"), &lrg).unwrap();
        csv_export::write_bb(&dir.path().join("bb.csv"), &bb).unwrap();
        let joined: Vec<csv_export::LrgBbRow> = lrg
            .iter()
            .zip(&bb)
            .map(|(l, b)| csv_export::LrgBbRow {
                file_name: l.file_name.clone(),
                category: l.category.clone(),
                bbox: b.bbox,
            })
            .collect();
        csv_export::write_lrg_bb(&dir.path().join("lrg_bb.csv"), &joined).unwrap();
        // The detector's files: every object (here the one rectangle) with its class.
        let objects: Vec<multibox::annotations::ImageBoxes> = joined
            .iter()
            .map(|r| multibox::annotations::ImageBoxes {
                file_name: r.file_name.clone(),
                boxes: vec![r.bbox],
                classes: vec![r.category.clone()],
            })
            .collect();
        multibox::annotations::write_boxes(
            &dir.path().join("mbb.csv"),
            &dir.path().join("mbb_classes.csv"),
            &objects,
        )
        .unwrap();
        Fixture { dir, boxes }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn spec(
        &self,
        kind: &str,
        inputs: &[(&str, &str)],
        outputs: &[&str],
        params: serde_json::Value,
    ) -> StageSpec {
        let map = |pairs: Vec<(String, PathBuf)>| {
            pairs
                .into_iter()
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        serde_json::from_value(serde_json::json!({
            "name": kind, "kind": kind,
            "inputs": map(inputs.iter().map(|(k, v)| (k.to_string(), self.path(v))).collect()),
            "outputs": map(outputs.iter().map(|v| (output_name(kind, v).to_string(), self.path(v))).collect()),
            "params": params,
            "work_dir": self.path(&format!("work/{kind}")),
            "data_dir": self.path("."),
        }))
        .unwrap()
    }

    /// A stage reading the labels `csv` (lrg.csv or bb.csv) and the image folder.
    pub fn csv_spec(
        &self,
        kind: &str,
        csv: &str,
        outputs: &[&str],
        params: serde_json::Value,
    ) -> StageSpec {
        self.spec(kind, &[("csv", csv), ("images", "images")], outputs, params)
    }
}

/// The name a pipeline file gives an output of the kind, from its file's extension.
fn output_name(kind: &str, path: &str) -> &'static str {
    match (kind, Path::new(path).extension().and_then(|e| e.to_str())) {
        (_, Some("safetensors")) => "model",
        ("train", Some("csv")) => "metrics",
        ("lr_find", Some("csv")) => "curve",
        ("lr_find", Some("json")) => "suggestion",
        ("predict", Some("csv")) => "predictions",
        _ => panic!("no output name for {path} of a {kind} stage"),
    }
}

pub fn tiny(task: &str, schedule: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "task": task, "backbone": "tiny-cnn", "random_init": true, "size": 32, "batch": 16,
        "workers": 1, "threads": 2, "schedule": schedule,
    })
}

pub fn read_csv(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_path(path).unwrap();
    let header = reader.headers().unwrap().iter().map(String::from).collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(String::from).collect())
        .collect();
    (header, rows)
}
