//! `cargo xtask predict PATH...`: a trained model on the user's own images and folders.
//!
//! xtask finds the model and the images, the trainer's `predict` (it links libtorch,
//! xtask never does) writes one `csv_export::ImagePrediction` per image as JSON lines,
//! and xtask prints them, exports them and draws them with viz.

use anyhow::{bail, Context, Result};
use csv_export::ImagePrediction;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::cache::project_root;
use crate::flags::PredictArgs;
use crate::pipelines;
use pipeline::{Pipeline, StageKind};

/// Extensions a folder walk picks up: what the loader decodes. A file named on the
/// command line is tried whatever its name.
const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "jpe", "jfif", "png", "webp", "bmp"];

/// The contact sheet shows this many images at most (it is one PNG).
const SHEET_MAX: usize = 60;

/// The command; exit code 2 when some images could not be read (they are
/// named and skipped).
pub fn run(args: &PredictArgs) -> Result<()> {
    if predict_files(args)? > 0 {
        std::process::exit(2);
    }
    Ok(())
}

/// Predicts; returns how many images were skipped (unreadable).
fn predict_files(args: &PredictArgs) -> Result<usize> {
    let model = match &args.model {
        Some(model) => model.clone(),
        None => default_model(args.pipeline.as_deref(), args.data.as_deref())?,
    };
    if !model.is_file() {
        bail!("model {} does not exist or is not a file", model.display());
    }
    let files = collect_images(&args.paths)?;
    if files.is_empty() {
        bail!(
            "no images in {} (a folder walk takes {})",
            args.paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            IMAGE_EXTENSIONS.join(", ")
        );
    }
    eprintln!("model: {}", model.display());
    let predictions = predict(&model, &files, args)?;
    print_table(&predictions);
    write_outputs(&predictions, &model, args)?;
    let skipped: Vec<&ImagePrediction> = predictions.iter().filter(|p| p.error.is_some()).collect();
    if !skipped.is_empty() {
        eprintln!(
            "{} of {} images skipped (unreadable, named above); exit code 2",
            skipped.len(),
            predictions.len()
        );
    }
    Ok(skipped.len())
}

/// Runs the trainer's `predict` on `files` and reads its answers.
fn predict(model: &Path, files: &[PathBuf], args: &PredictArgs) -> Result<Vec<ImagePrediction>> {
    let libtorch = crate::torch::ensure_libtorch()?;
    let trainer = crate::torch::trainer_binary(&libtorch)?;
    let work = tempfile::tempdir()?;
    let list = work.path().join("images.json");
    csv_export::write_bytes_atomic(&list, &serde_json::to_vec(files)?)?;
    let out = work.path().join("predictions.jsonl");
    let mut cmd = Command::new(&trainer);
    cmd.arg("predict")
        .arg("--model")
        .arg(model)
        .arg("--images")
        .arg(&list)
        .arg("--out")
        .arg(&out)
        .args(["--top", &args.top.to_string()])
        .args(["--batch", &args.batch.to_string()])
        // The trainer's log is for pipelines; here only its own lines and warnings.
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or("warn".into()),
        );
    if args.tta {
        cmd.arg("--tta");
    }
    if let Some(threads) = args.threads {
        cmd.args(["--threads", &threads.to_string()]);
    }
    let status = cmd
        .status()
        .with_context(|| format!("starting {}", trainer.display()))?;
    if !status.success() {
        bail!("the trainer's predict exited with {status}");
    }
    let mut predictions = csv_export::read_jsonl(&out)?;
    for p in &mut predictions {
        p.objects.retain(|o| o.score >= args.min_score);
    }
    if predictions.len() != files.len() {
        bail!(
            "the trainer answered for {} of {} images",
            predictions.len(),
            files.len()
        );
    }
    Ok(predictions)
}

/// Files as given, and every image under the folders given (sorted, so the order and
/// therefore every output is the same from run to run).
pub fn collect_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            // A missing or unreadable file is reported by the loader with the reason.
            files.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in walkdir::WalkDir::new(path).follow_links(true) {
            let entry = entry.with_context(|| format!("walking {} for images", path.display()))?;
            let is_image = entry.path().extension().is_some_and(|e| {
                IMAGE_EXTENSIONS
                    .iter()
                    .any(|known| e.eq_ignore_ascii_case(known))
            });
            if entry.file_type().is_file() && is_image {
                found.push(entry.into_path());
            }
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// The newest model a train stage wrote: of pipeline `name` (or of any pipeline), on
/// dataset `data` (or on any dataset that has runs).
pub fn default_model(name: Option<&str>, data: Option<&Path>) -> Result<PathBuf> {
    let root = project_root();
    let pipeline_files = match name {
        Some(name) => vec![Pipeline::locate(name, &root)?],
        None => toml_files(&root.join("pipelines")),
    };
    let datasets: Vec<PathBuf> = match data {
        Some(dir) => vec![dir.to_path_buf()],
        None => std::fs::read_dir(root.join("runs"))
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .map(|e| e.path())
                    .filter(|p| p.is_dir())
                    .collect()
            })
            .unwrap_or_default(),
    };
    let mut candidates = Vec::new();
    for dataset in &datasets {
        for file in &pipeline_files {
            let pipeline = pipelines::load(file, dataset, &pipelines::default_out(dataset, file))?;
            for stage in pipeline
                .stages
                .iter()
                .filter(|s| s.kind == StageKind::Train)
            {
                candidates.extend(
                    stage
                        .outputs
                        .values()
                        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
                        .filter_map(|p| Some((p.metadata().ok()?.modified().ok()?, p.clone()))),
                );
            }
        }
    }
    match candidates.into_iter().max() {
        Some((_, model)) => Ok(model),
        None => bail!(
            "no trained model found{}{}: run a pipeline first (`cargo xtask pipeline bbox`), \
             or pass --model FILE",
            name.map(|n| format!(" for pipeline {n}"))
                .unwrap_or_default(),
            data.map(|d| format!(" on {}", d.display()))
                .unwrap_or_default()
        ),
    }
}

fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn print_table(predictions: &[ImagePrediction]) {
    let width = predictions
        .iter()
        .map(|p| p.file.display().to_string().chars().count())
        .max()
        .unwrap_or(4)
        .clamp(4, 60);
    println!("{:<width$}  {:>11}  prediction", "file", "size");
    for p in predictions {
        let file = p.file.display().to_string();
        let mut said = Vec::new();
        if let Some(label) = viz::predictions::prediction_label(p) {
            said.push(label);
        }
        if let Some(bbox) = p.bbox {
            said.push(format!("box {}", bbox.map(|v| format!("{v:.0}")).join(" ")));
        }
        for o in &p.objects {
            said.push(format!(
                "{} {:.2} at {}",
                o.class,
                o.score,
                o.bbox.map(|v| format!("{v:.0}")).join(" ")
            ));
        }
        match &p.error {
            Some(reason) => println!("{file:<width$}  {:>11}  SKIPPED: {reason}", "-"),
            None => println!(
                "{file:<width$}  {:>11}  {}",
                format!("{}x{}", p.width, p.height),
                said.join("  ")
            ),
        }
    }
}

fn write_outputs(predictions: &[ImagePrediction], model: &Path, args: &PredictArgs) -> Result<()> {
    if let Some(csv) = &args.csv {
        csv_export::write_predictions_csv(csv, predictions)
            .with_context(|| format!("writing {}", csv.display()))?;
        eprintln!("wrote {}", csv.display());
    }
    if let Some(jsonl) = &args.jsonl {
        csv_export::write_atomic(jsonl, |w| csv_export::write_jsonl(w, predictions))
            .with_context(|| format!("writing {}", jsonl.display()))?;
        eprintln!("wrote {}", jsonl.display());
    }
    if let Some(dir) = &args.draw {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let names = drawing_names(predictions);
        let mut drawn = 0;
        for (p, name) in predictions.iter().zip(&names) {
            if p.error.is_some() {
                continue;
            }
            match viz::predictions::draw_prediction(p) {
                Ok(image) => {
                    viz::save_png(&image, &dir.join(name))?;
                    drawn += 1;
                }
                Err(reason) => eprintln!("{}: not drawn: {reason}", p.file.display()),
            }
        }
        eprintln!("drew {drawn} images into {}", dir.display());
    }
    if let Some(grid) = &args.grid {
        viz::save_png(
            &viz::predictions::prediction_sheet(predictions, SHEET_MAX),
            grid,
        )?;
        eprintln!(
            "drew {} (the first {} images)",
            grid.display(),
            predictions.len().min(SHEET_MAX)
        );
    }
    if let Some(html) = &args.html {
        let page =
            viz::predictions::predictions_html(predictions, &model.display().to_string(), 320);
        csv_export::write_bytes_atomic(html, page.as_bytes())?;
        eprintln!("wrote {}", html.display());
    }
    Ok(())
}

/// `<stem>.png` per image, `<stem>-2.png` and so on where two images share a stem.
fn drawing_names(predictions: &[ImagePrediction]) -> Vec<String> {
    let mut seen = std::collections::HashMap::<String, usize>::new();
    predictions
        .iter()
        .map(|p| {
            let stem = p
                .file
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "image".into());
            let count = seen.entry(stem.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                format!("{stem}.png")
            } else {
                format!("{stem}-{count}.png")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_walked_in_order_for_images_only() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("b");
        std::fs::create_dir_all(&sub).unwrap();
        for name in ["b/z.JPG", "a.png", "notes.txt", "b/c.jpeg"] {
            std::fs::write(dir.path().join(name), b"x").unwrap();
        }
        let named = dir.path().join("named.dat");
        let files = collect_images(&[dir.path().to_path_buf(), named.clone()]).unwrap();
        let rel: Vec<String> = files
            .iter()
            .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
            .collect();
        assert_eq!(rel, ["a.png", "b/c.jpeg", "b/z.JPG", "named.dat"]);
    }

    #[test]
    fn drawings_of_images_with_the_same_stem_do_not_collide() {
        let p = |f: &str| ImagePrediction::skipped(f.into(), String::new());
        let names = drawing_names(&[p("a/x.jpg"), p("b/x.png"), p("y.jpg")]);
        assert_eq!(names, ["x.png", "x-2.png", "y.png"]);
    }
}
