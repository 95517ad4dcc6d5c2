//! `cargo xtask show <artifact> [--draw N]` and `cargo xtask show-image <id>`:
//! look at what a stage wrote, or at one image of the dataset, the way the
//! lesson does in its notebook. The work is in `viz::inspect`; this prints it.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// The lesson's layout of a dataset dir: `(annotations JSON, images dir)`.
pub fn voc_paths(data: &Path) -> (PathBuf, PathBuf) {
    (
        data.join("pascal_train2007.json"),
        data.join("VOCdevkit/VOC2007/JPEGImages"),
    )
}

/// Prints a summary of `artifact` (lrg.csv, bb.csv, a metrics, lr_find or
/// predictions CSV, an lr_find JSON, the COCO JSON). With `draw = Some(n)`,
/// also draws the first `n` rows on their images from `images_dir` as one
/// grid (or plots a metrics / lr_find CSV) into the PNG `out`.
pub fn show(artifact: &Path, draw: Option<usize>, images_dir: &Path, out: &Path) -> Result<()> {
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
pub fn show_image(dataset_json: &Path, images_dir: &Path, id: u64, out: &Path) -> Result<()> {
    let names = viz::inspect::draw_dataset_image(dataset_json, images_dir, id, out)
        .with_context(|| format!("show-image {id}"))?;
    println!(
        "image {id}: {} object(s): {}",
        names.len(),
        names.join(", ")
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

    #[test]
    fn voc_paths_follow_the_lesson_layout() {
        let (json, images) = voc_paths(Path::new("/d"));
        assert_eq!(json, Path::new("/d/pascal_train2007.json"));
        assert_eq!(images, Path::new("/d/VOCdevkit/VOC2007/JPEGImages"));
    }
}
