//! `trainer predict` (behind `cargo xtask predict`): models trained on small synthetic
//! JPEGs, asked about freshly drawn images they never saw.

mod common;

use common::jpegs::{tiny, Fixture};
use std::path::PathBuf;
use tch::Device;
use trainer::infer::{predict_images, PredictOptions};
use trainer::stage::{load_model, run};

fn options(workers: usize, tta: bool) -> PredictOptions {
    PredictOptions {
        top: 2,
        batch: 16,
        workers,
        tta,
    }
}

/// Trains `task` on `fx` and returns the model file.
fn train(fx: &Fixture, task: &str, csv: &str, lr: f64, epochs: usize) -> PathBuf {
    let model = format!("out/{task}.safetensors");
    let params = tiny(
        task,
        serde_json::json!([{ "fit": { "lr": lr, "cycles": 1, "cycle_len": epochs } }]),
    );
    let metrics = format!("out/{task}.csv");
    run(
        &fx.csv_spec("train", csv, &[&model, &metrics], params),
        false,
    )
    .unwrap();
    fx.path(&model)
}

#[test]
fn models_find_the_class_and_the_box_on_images_they_never_saw() {
    let fx = Fixture::new(200);
    let classifier = train(&fx, "classify", "lrg.csv", 1e-2, 6);
    let regressor = train(&fx, "bbox", "bb.csv", 5e-2, 8);

    let fresh = Fixture::with_seed(48, 99);
    let files: Vec<PathBuf> = fresh
        .boxes
        .iter()
        .map(|(f, _)| fresh.path("images").join(f))
        .collect();
    let truth = csv_export::read_lrg(&fresh.path("lrg.csv")).unwrap();

    let (learner, meta) = load_model(&classifier, Device::Cpu).unwrap();
    let answers = predict_images(&learner, &meta, &files, &options(2, false), &mut |_| {}).unwrap();
    assert_eq!(answers.len(), files.len());
    let mut right = 0;
    for ((answer, row), file) in answers.iter().zip(&truth).zip(&files) {
        assert_eq!(&answer.file, file, "answers come in the order asked");
        assert_eq!((answer.width, answer.height), (80, 64));
        assert_eq!(answer.classes.len(), 2, "--top 2");
        assert!(answer.classes[0].prob >= answer.classes[1].prob);
        right += usize::from(answer.classes[0].class == row.category);
    }
    let accuracy = right as f64 / files.len() as f64;
    eprintln!("classifier on unseen images: accuracy {accuracy:.3}");
    assert!(accuracy > 0.8, "accuracy {accuracy} (chance 1/3)");

    let (learner, meta) = load_model(&regressor, Device::Cpu).unwrap();
    for tta in [false, true] {
        let answers =
            predict_images(&learner, &meta, &files, &options(2, tta), &mut |_| {}).unwrap();
        let good = answers
            .iter()
            .zip(&fresh.boxes)
            .filter(|(a, (_, truth))| trainer::iou(a.bbox.unwrap(), *truth) >= 0.5)
            .count();
        let share = good as f64 / files.len() as f64;
        eprintln!("box model on unseen images (tta {tta}): IoU >= 0.5 for {share:.3}");
        assert!(share > 0.5, "IoU >= 0.5 for {share} (tta {tta})");
    }

    // The same answers whatever the number of decoding threads.
    let one = predict_images(&learner, &meta, &files, &options(1, true), &mut |_| {}).unwrap();
    let three = predict_images(&learner, &meta, &files, &options(3, true), &mut |_| {}).unwrap();
    assert_eq!(one, three);
}
