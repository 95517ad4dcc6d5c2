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

    // A photo stored on its side with EXIF saying so gets the box of the upright photo.
    let upright = &files[0];
    let sideways = fresh.path("sideways.jpg");
    save_exif_rotated(&image::open(upright).unwrap().to_rgb8(), &sideways);
    let both = [upright.clone(), sideways];
    let answers = predict_images(&learner, &meta, &both, &options(1, false), &mut |_| {}).unwrap();
    let (a, b) = (answers[0].bbox.unwrap(), answers[1].bbox.unwrap());
    assert_eq!((answers[1].width, answers[1].height), (80, 64));
    assert!(
        a.iter().zip(&b).all(|(a, b)| (a - b).abs() <= 2.0),
        "upright {a:?}, EXIF-rotated {b:?}"
    );

    // The same answers whatever the number of decoding threads.
    let one = predict_images(&learner, &meta, &files, &options(1, true), &mut |_| {}).unwrap();
    let three = predict_images(&learner, &meta, &files, &options(3, true), &mut |_| {}).unwrap();
    assert_eq!(one, three);
}

/// The body of an EXIF APP1 segment (`Exif\0\0`, then a little-endian TIFF block)
/// with one tag: `orientation`.
fn exif_orientation(orientation: u16) -> Vec<u8> {
    let mut exif = b"Exif\0\0II\x2a\0\x08\0\0\0".to_vec();
    exif.extend_from_slice(&1u16.to_le_bytes()); // one IFD entry
    exif.extend_from_slice(&0x0112u16.to_le_bytes()); // Orientation
    exif.extend_from_slice(&3u16.to_le_bytes()); // SHORT
    exif.extend_from_slice(&1u32.to_le_bytes()); // one value
    exif.extend_from_slice(&u32::from(orientation).to_le_bytes());
    exif.extend_from_slice(&0u32.to_le_bytes()); // no next IFD
    exif
}

/// Writes `image` as a JPEG whose EXIF says to rotate it 90 degrees clockwise for
/// viewing (orientation 6), storing the pixels turned the other way: viewed, it is
/// `image` again.
fn save_exif_rotated(image: &image::RgbImage, path: &std::path::Path) {
    let stored = image::imageops::rotate270(image);
    let mut encoder = jpeg_encoder::Encoder::new_file(path, 95).unwrap();
    encoder.add_app_segment(1, &exif_orientation(6)).unwrap();
    encoder
        .encode(
            stored.as_raw(),
            stored.width() as u16,
            stored.height() as u16,
            jpeg_encoder::ColorType::Rgb,
        )
        .unwrap();
}

#[test]
fn a_folder_of_real_world_files_is_predicted_or_skipped_with_the_reason() {
    let fx = Fixture::new(60);
    let model = train(&fx, "bbox", "bb.csv", 5e-2, 1);
    let (learner, meta) = load_model(&model, Device::Cpu).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let photo = image::open(fx.path("images/000000.jpg")).unwrap().to_rgb8();
    let (w, h) = photo.dimensions();

    let corrupt = dir.path().join("corrupt.jpg");
    std::fs::write(&corrupt, b"\xff\xd8\xff\xe0 not really a JPEG").unwrap();
    let alpha = dir.path().join("alpha.png");
    image::DynamicImage::ImageRgb8(photo.clone())
        .to_rgba8()
        .save(&alpha)
        .unwrap();
    let grey = dir.path().join("grey.jpg");
    image::DynamicImage::ImageRgb8(photo.clone())
        .to_luma8()
        .save(&grey)
        .unwrap();
    let cmyk = dir.path().join("cmyk.jpg");
    let cmyk_pixels: Vec<u8> = photo
        .pixels()
        .flat_map(|p| {
            let [r, g, b] = p.0.map(|v| 255 - v);
            let k = r.min(g).min(b);
            [r - k, g - k, b - k, k]
        })
        .collect();
    jpeg_encoder::Encoder::new_file(&cmyk, 90)
        .unwrap()
        .encode(
            &cmyk_pixels,
            w as u16,
            h as u16,
            jpeg_encoder::ColorType::Cmyk,
        )
        .unwrap();
    let rotated = dir.path().join("rotated.jpg");
    save_exif_rotated(&photo, &rotated);
    let big = dir.path().join("big.jpg");
    image::imageops::resize(&photo, 4000, 3000, image::imageops::FilterType::Triangle)
        .save(&big)
        .unwrap();

    let files = vec![
        corrupt.clone(),
        alpha,
        grey,
        cmyk,
        rotated.clone(),
        big.clone(),
    ];
    let answers = predict_images(&learner, &meta, &files, &options(2, false), &mut |_| {}).unwrap();
    assert_eq!(answers.len(), files.len());
    let reason = answers[0]
        .error
        .as_deref()
        .expect("the corrupt file is skipped");
    assert!(reason.contains("corrupt.jpg"), "{reason}");
    for answer in &answers[1..] {
        assert!(answer.error.is_none(), "{answer:?}");
        assert!(answer.bbox.is_some(), "{answer:?}");
    }
    let size = |file: &PathBuf| {
        let a = answers.iter().find(|a| &a.file == file).unwrap();
        (a.width, a.height)
    };
    // As a photo viewer shows them: the EXIF-rotated file is the original again.
    assert_eq!(size(&rotated), (w, h));
    assert_eq!(size(&big), (4000, 3000));
}
