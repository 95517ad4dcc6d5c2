//! Prediction on a user's own images (`trainer predict`, behind `cargo xtask predict`):
//! any files, no labels, batched and decoded on the augment loader's threads, with an
//! optional flip TTA ([`Learner::infer`]).

use crate::learner::{boxes_in_input_pixels, Learner};
use crate::stage::{AnyModel, ModelMeta};
use crate::task::unsquash_box;
use crate::TrainError;
use csv_export::{ClassScore, ImagePrediction};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{Device, Tensor};

#[derive(Debug, Clone)]
pub struct PredictOptions {
    /// Classes to report per image, most probable first.
    pub top: usize,
    pub batch: usize,
    /// Decoding threads.
    pub workers: usize,
    /// Average over the image and its mirror image (boxes mirrored back first).
    pub tta: bool,
}

/// Loads `model`, predicts on `files` with a progress bar, writes the answers to `out`
/// as JSON lines, and says how fast it went and what it skipped.
pub fn run(
    model: &Path,
    files: &[PathBuf],
    options: &PredictOptions,
    threads: usize,
    out: &Path,
) -> anyhow::Result<()> {
    tch::set_num_threads(threads as i32);
    let device = crate::stage::device();
    let (learner, meta) = crate::stage::load_model(model, device)?;
    eprintln!(
        "{}: {} {} model, {} px input, on {device:?}, {threads} threads{}",
        model.display(),
        meta.arch,
        meta.task.name(),
        meta.size,
        if options.tta { ", flip TTA" } else { "" }
    );
    let bar = indicatif::ProgressBar::new(files.len() as u64).with_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {pos}/{len} images  {per_sec}  eta {eta}",
        )
        .expect("a valid template"),
    );
    let start = std::time::Instant::now();
    let predictions = predict_images(&learner, &meta, files, options, &mut |done| {
        bar.set_position(done as u64)
    })?;
    bar.finish_and_clear();
    let seconds = start.elapsed().as_secs_f64();
    let skipped = predictions.iter().filter(|p| p.error.is_some()).count();
    csv_export::write_atomic(out, |w| csv_export::write_jsonl(w, &predictions))
        .map_err(|e| TrainError::io(out, e))?;
    eprintln!(
        "predicted {} images in {seconds:.2} s ({:.1} images/s, decoding included){}",
        files.len() - skipped,
        (files.len() - skipped) as f64 / seconds.max(1e-9),
        if skipped > 0 {
            format!(", {skipped} skipped")
        } else {
            String::new()
        }
    );
    Ok(())
}

/// The model's predictions for `files`, in their order; an image that cannot be read is
/// an [`ImagePrediction::skipped`] with the reason. `progress(n)` is called after each
/// batch with the images done so far.
pub fn predict_images(
    learner: &Learner<AnyModel>,
    meta: &ModelMeta,
    files: &[PathBuf],
    options: &PredictOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Vec<ImagePrediction>, TrainError> {
    let items: Vec<augment::Item> = files
        .iter()
        .map(|path| augment::Item {
            path: path.clone(),
            class: None,
            bbox: None,
            ..augment::Item::default()
        })
        .collect();
    let loader = augment::Loader::new(
        Arc::new(items),
        augment::LoaderConfig {
            size: meta.size,
            batch_size: options.batch.max(1),
            workers: options.workers.max(1),
            prefetch: 2,
            shuffle: false,
            seed: 0,
            augment: None,
            drop_last: false,
            on_bad_image: augment::BadImage::Skip,
            normalisation: meta.normalisation,
            orientation: augment::Orientation::Exif,
        },
    );
    let mut answers: Vec<Option<ImagePrediction>> = vec![None; files.len()];
    let mut done = 0;
    let mut epoch = loader.epoch(0);
    for batch in &mut epoch {
        let batch = batch.map_err(TrainError::Load)?;
        if batch.n > 0 {
            let predicted = predict_batch(learner, meta, files, &batch, options)?;
            for (k, p) in predicted.into_iter().enumerate() {
                answers[batch.indices[k]] = Some(p);
            }
        }
        done += batch.n;
        progress(done);
        loader.recycle(batch);
    }
    let skipped = epoch.skipped();
    Ok(files
        .iter()
        .zip(answers)
        .map(|(file, answer)| {
            answer.unwrap_or_else(|| {
                let reason = skipped
                    .iter()
                    .find(|e| e.path() == Some(file.as_path()))
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "not read".into());
                ImagePrediction::skipped(file.clone(), reason)
            })
        })
        .collect())
}

fn predict_batch(
    learner: &Learner<AnyModel>,
    meta: &ModelMeta,
    files: &[PathBuf],
    batch: &augment::Batch,
    options: &PredictOptions,
) -> Result<Vec<ImagePrediction>, TrainError> {
    let s = i64::from(batch.size);
    let x = Tensor::from_slice(&batch.x)
        .view([batch.n as i64, 3, s, s])
        .to_device(learner.device());
    let out = learner.infer(&x, options.tta);
    let mut answers: Vec<ImagePrediction> = (0..batch.n)
        .map(|k| {
            let (h, w) = batch.orig_sizes[k];
            ImagePrediction {
                file: files[batch.indices[k]].clone(),
                width: w,
                height: h,
                classes: Vec::new(),
                bbox: None,
                objects: Vec::new(),
                error: None,
            }
        })
        .collect();
    if let (Some(log_probs), Some(classes)) = (&out.class_log_probs, meta.task.classes()) {
        let k = options.top.clamp(1, classes.len()) as i64;
        let (top_log_p, top_i) = log_probs.topk(k, -1, true, true);
        let top_p = Vec::<f32>::try_from(top_log_p.exp().to_device(Device::Cpu).view(-1))?;
        let top_i = Vec::<i64>::try_from(top_i.to_device(Device::Cpu).view(-1))?;
        for (n, answer) in answers.iter_mut().enumerate() {
            let row = n * k as usize..(n + 1) * k as usize;
            answer.classes = top_i[row.clone()]
                .iter()
                .zip(&top_p[row])
                .map(|(&i, &prob)| ClassScore {
                    class: classes[i as usize].clone(),
                    prob,
                })
                .collect();
        }
    }
    if let (Some(output), Some((ssd, nms)), Some(classes)) =
        (&out.detector, meta.task.detector(), meta.task.classes())
    {
        let found = ssd.detect(output, nms)?;
        for ((answer, detections), &orig) in answers.iter_mut().zip(found).zip(&batch.orig_sizes) {
            answer.objects = detections
                .into_iter()
                .map(|d| csv_export::DetectedObject {
                    class: classes[d.class].clone(),
                    score: d.score,
                    bbox: crate::task::detection_in_original_pixels(d.bbox, orig, batch.size),
                })
                .collect();
        }
    }
    if let Some(boxes) = &out.boxes {
        let boxes = boxes_in_input_pixels(boxes, batch.size as usize)?;
        for (answer, (bbox, &orig)) in answers.iter_mut().zip(boxes.iter().zip(&batch.orig_sizes)) {
            answer.bbox = Some(unsquash_box(*bbox, orig, batch.size));
        }
    }
    Ok(answers)
}
