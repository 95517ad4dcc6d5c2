//! `cargo xtask show <artifact> [--draw N]` and `cargo xtask show-image <id>`:
//! look at what a stage wrote, or at one image of the dataset, the way the
//! lesson does in its notebook. The work is in `viz::inspect`; this prints it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::cache::project_root;
use crate::data::locate_data;
use crate::flags::{ShowCmd, ShowImageCmd};

impl ShowCmd {
    pub fn run(self) -> Result<()> {
        let (_, images) = voc_paths(&locate_data(&self.data)?.dir);
        let png = self.png.unwrap_or_else(|| {
            let stem = self
                .artifact
                .file_stem()
                .unwrap_or_default()
                .to_string_lossy();
            let name = format!("{stem}_first{}.png", self.draw.unwrap_or(0));
            self.artifact.with_file_name(name)
        });
        show(&self.artifact, self.draw, &images, &png)
    }
}

impl ShowImageCmd {
    pub fn run(self) -> Result<()> {
        let data = std::fs::canonicalize(locate_data(&self.data)?.dir)?;
        let (json, images) = voc_paths(&data);
        let dataset = data.file_name().unwrap_or_default().to_string_lossy();
        let png = self.png.unwrap_or_else(|| {
            project_root()
                .join("runs")
                .join(&*dataset)
                .join(format!("image-{}.png", self.id))
        });
        show_image(&json, &images, self.id, &png)
    }
}

/// The lesson's layout of a dataset dir: `(annotations JSON, images dir)`.
pub fn voc_paths(data: &Path) -> (PathBuf, PathBuf) {
    (
        data.join("pascal_train2007.json"),
        data.join("VOCdevkit/VOC2007/JPEGImages"),
    )
}

/// Prints a summary of `artifact` (lrg.csv, bb.csv, lrg_bb.csv, a metrics,
/// lr_find or predictions CSV, an lr_find JSON, the COCO JSON). With `draw = Some(n)`,
/// also draws the first `n` rows on their images from `images_dir` as one
/// grid (or plots a metrics / lr_find CSV) into the PNG `out`.
fn show(artifact: &Path, draw: Option<usize>, images_dir: &Path, out: &Path) -> Result<()> {
    let summary = viz::inspect::summarize(artifact)
        .with_context(|| format!("show {}", artifact.display()))?;
    print!("{summary}");
    if let Some(count) = draw {
        if count == 0 {
            bail!("--draw needs a number of rows of at least 1");
        }
        let drawn = viz::inspect::draw_artifact(artifact, count, images_dir, out)
            .with_context(|| format!("draw {}", artifact.display()))?;
        println!("drew {}: {}", drawn.what, drawn.path.display());
    }
    Ok(())
}

/// Draws every box and class name of image `id` (the lesson's `draw_idx`)
/// from the COCO-style JSON onto the full-size image, as the PNG `out`.
/// An unreadable image is drawn as a marked picture saying why, with a warning.
fn show_image(dataset_json: &Path, images_dir: &Path, id: u64, out: &Path) -> Result<()> {
    let drawn = viz::inspect::draw_dataset_image_with(
        dataset_json,
        images_dir,
        id,
        out,
        viz::OnBadImage::Skip,
    )
    .with_context(|| format!("show-image {id}"))?;
    for (path, reason) in &drawn.unreadable {
        eprintln!(
            "warning: unreadable image {}: {reason} (drew a marked picture instead)",
            path.display()
        );
    }
    println!(
        "image {id}: {} object(s): {}",
        drawn.names.len(),
        drawn.names.join(", ")
    );
    println!("drew {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_png(path: &Path) -> bool {
        std::fs::read(path).is_ok_and(|bytes| bytes.starts_with(b"\x89PNG\r\n\x1a\n"))
    }

    #[test]
    fn show_draws_a_grid_and_refuses_zero_rows() {
        let dir = tempfile::tempdir().unwrap();
        viz::image::RgbImage::from_pixel(64, 48, viz::image::Rgb([120, 90, 60]))
            .save(dir.path().join("a.jpg"))
            .unwrap();
        let lrg = dir.path().join("lrg.csv");
        std::fs::write(&lrg, "fn,cat\na.jpg,horse\n").unwrap();
        let out = dir.path().join("grid.png");
        show(&lrg, Some(4), dir.path(), &out).unwrap();
        assert!(is_png(&out));
        let error = show(&lrg, Some(0), dir.path(), &out)
            .unwrap_err()
            .to_string();
        assert!(error.contains("--draw"), "{error}");
        let error = show(&dir.path().join("nope.csv"), None, dir.path(), &out).unwrap_err();
        assert!(format!("{error:#}").contains("nope.csv"), "{error:#}");
    }

    /// Pixels of the unreadable picture's red cross.
    fn cross_pixels(png: &Path) -> usize {
        viz::image::open(png)
            .unwrap()
            .to_rgb8()
            .pixels()
            .filter(|p| p.0 == [220, 40, 40])
            .count()
    }

    /// A synthetic set whose first image (by bb.csv) is garbage.
    fn dataset_with_a_bad_image(dir: &Path) -> (PathBuf, PathBuf, String) {
        let data = dir.join("data");
        synthetic_voc::generate(
            &data,
            &synthetic_voc::SynthConfig {
                images: 6,
                ..Default::default()
            },
        )
        .unwrap();
        let (json, images) = voc_paths(&data);
        let dataset = voc_annotations::load_coco_json(&json).unwrap();
        let first = dataset.images[0].file_name.clone();
        std::fs::write(images.join(&first), b"not a jpeg").unwrap();
        (json, images, first)
    }

    #[test]
    fn show_image_draws_an_unreadable_image_as_a_marked_picture() {
        let dir = tempfile::tempdir().unwrap();
        let (json, images, _) = dataset_with_a_bad_image(dir.path());
        let dataset = voc_annotations::load_coco_json(&json).unwrap();
        let out = dir.path().join("bad.png");
        show_image(&json, &images, dataset.images[0].id, &out).unwrap();
        assert!(cross_pixels(&out) > 100, "the picture is crossed out");
        let good = dir.path().join("good.png");
        show_image(&json, &images, dataset.images[1].id, &good).unwrap();
        assert!(cross_pixels(&good) < cross_pixels(&out) / 10);
    }

    #[test]
    fn augment_grid_draws_an_unreadable_image_as_marked_tiles() {
        let dir = tempfile::tempdir().unwrap();
        let (json, images, bad) = dataset_with_a_bad_image(dir.path());
        let dataset = voc_annotations::load_coco_json(&json).unwrap();
        let bb = dir.path().join("bb.csv");
        let rows: String = dataset
            .images
            .iter()
            .map(|i| format!("{},0 0 {} {}\n", i.file_name, i.height - 1, i.width - 1))
            .collect();
        std::fs::write(&bb, format!("fn,bbox\n{rows}")).unwrap();
        let grid = |params: serde_json::Value| {
            let spec = pipeline::StageSpec {
                name: "augmented".into(),
                kind: pipeline::StageKind::AugmentGrid,
                inputs: [
                    ("csv".into(), bb.clone()),
                    ("images".into(), images.clone()),
                ]
                .into(),
                outputs: [("png".into(), dir.path().join("grid.png"))].into(),
                params,
                work_dir: dir.path().join("work"),
                data_dir: dir.path().join("data"),
                fingerprint: String::new(),
            };
            crate::stages::execute(&spec).map(|()| cross_pixels(&dir.path().join("grid.png")))
        };
        let marked = grid(serde_json::json!({ "images": 2, "repeats": 2 })).unwrap();
        assert!(marked > 100, "the bad image's tiles are crossed out");
        let note = std::fs::read_to_string(dir.path().join("work").join(pipeline::NOTE_FILE));
        assert!(
            note.as_deref()
                .is_ok_and(|n| n.starts_with("1 unreadable images") && n.contains(&bad)),
            "{note:?}"
        );
        let error = grid(serde_json::json!({ "images": 2, "repeats": 2, "on_bad_image": "fail" }))
            .unwrap_err();
        assert!(format!("{error:#}").contains(&bad), "{error:#}");
    }

    #[test]
    fn voc_paths_follow_the_lesson_layout() {
        let (json, images) = voc_paths(Path::new("/d"));
        assert_eq!(json, Path::new("/d/pascal_train2007.json"));
        assert_eq!(images, Path::new("/d/VOCdevkit/VOC2007/JPEGImages"));
    }
}
