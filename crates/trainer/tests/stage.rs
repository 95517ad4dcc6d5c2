//! The stage runner end to end on small synthetic JPEGs: one coloured rectangle per
//! image (its colour the class, its extent the box), with the tiny CNN from scratch.

mod common;

use common::jpegs::{read_csv, tiny, Fixture, H, W};
use trainer::stage::run;

fn parse_box(s: &str) -> [f32; 4] {
    csv_export::parse_bbox(s).unwrap()
}

#[test]
fn classifier_trains_predicts_and_resumes() {
    let fx = Fixture::new(150);
    let params = tiny(
        "classify",
        serde_json::json!([{ "fit": { "lr": 1e-2, "cycles": 1, "cycle_len": 6 } }]),
    );
    let train = fx.csv_spec(
        "train",
        "lrg.csv",
        &["out/lrg.safetensors", "out/lrg.csv"],
        params.clone(),
    );
    run(&train, false).unwrap();

    let (header, rows) = read_csv(&fx.path("out/lrg.csv"));
    assert_eq!(
        header,
        ["epoch", "trn_loss", "val_loss", "accuracy", "seconds"]
    );
    assert_eq!(rows.len(), 6);
    assert_eq!(
        rows.iter().map(|r| r[0].as_str()).collect::<Vec<_>>(),
        ["0", "1", "2", "3", "4", "5"]
    );

    let predict = fx.spec(
        "predict",
        &[
            ("csv", "lrg.csv"),
            ("images", "images"),
            ("model", "out/lrg.safetensors"),
        ],
        &["out/predictions.csv"],
        serde_json::json!({"task": "classify", "workers": 1}),
    );
    run(&predict, false).unwrap();
    let (header, rows) = read_csv(&fx.path("out/predictions.csv"));
    assert_eq!(header, ["fn", "cat", "true_cat", "prob"]);
    assert_eq!(rows.len(), 30); // the validation fifth of 150
    let accuracy = rows.iter().filter(|r| r[1] == r[2]).count() as f64 / rows.len() as f64;
    eprintln!("synthetic JPEG classifier: validation accuracy {accuracy:.3}");
    assert!(accuracy > 0.8, "accuracy {accuracy} (chance 1/3)");

    // A resumed run whose checkpoint is complete re-exports without training again:
    // the metrics, seconds included, are the checkpoint's.
    let before = std::fs::read_to_string(fx.path("out/lrg.csv")).unwrap();
    std::fs::remove_file(fx.path("out/lrg.csv")).unwrap();
    run(&train, true).unwrap();
    assert_eq!(
        std::fs::read_to_string(fx.path("out/lrg.csv")).unwrap(),
        before
    );

    // The same stage after its code changed (another fingerprint from the runner)
    // trains again: the old checkpoint is not resumed.
    let mut changed = train.clone();
    changed.fingerprint = "another version of the code".into();
    let mut epochs_trained = 0;
    trainer::stage::run_observed(&changed, true, &mut |_| {
        epochs_trained += 1;
        Ok(())
    })
    .unwrap();
    assert_eq!(epochs_trained, 6, "a checkpoint of other code was resumed");
}

#[test]
fn classifier_learns_with_sgd_momentum_too() {
    let fx = Fixture::new(150);
    let mut params = tiny(
        "classify",
        serde_json::json!([{ "fit": { "lr": 5e-2, "cycles": 1, "cycle_len": 6 } }]),
    );
    params["optimiser"] = "sgd".into();
    params["momentum"] = 0.9.into();
    let train = fx.csv_spec(
        "train",
        "lrg.csv",
        &["out/lrg.safetensors", "out/lrg.csv"],
        params,
    );
    run(&train, false).unwrap();
    let (_, rows) = read_csv(&fx.path("out/lrg.csv"));
    let accuracy: f64 = rows.last().unwrap()[3].parse().unwrap();
    eprintln!("synthetic JPEG classifier, SGD: validation accuracy {accuracy:.3}");
    assert!(accuracy > 0.8, "accuracy {accuracy} (chance 1/3)");

    // An optimiser the trainer does not have is refused by name.
    let mut params = tiny("classify", serde_json::json!([]));
    params["optimiser"] = "rmsprop".into();
    let spec = fx.csv_spec(
        "train",
        "lrg.csv",
        &["out/x.safetensors", "out/x.csv"],
        params,
    );
    let e = format!("{:#}", run(&spec, false).unwrap_err());
    assert!(e.contains("rmsprop"), "{e}");
}

#[test]
fn bbox_model_beats_the_mean_box_in_original_pixels() {
    let fx = Fixture::new(200);
    let params = tiny(
        "bbox",
        serde_json::json!([{ "fit": { "lr": 5e-2, "cycles": 1, "cycle_len": 8 } }]),
    );
    run(
        &fx.csv_spec(
            "train",
            "bb.csv",
            &["out/bb.safetensors", "out/bb.csv"],
            params,
        ),
        false,
    )
    .unwrap();
    let (header, rows) = read_csv(&fx.path("out/bb.csv"));
    assert_eq!(
        header,
        ["epoch", "trn_loss", "val_loss", "l1_px", "mean_iou", "iou50", "seconds"]
    );
    assert_eq!(rows.len(), 8);

    let predict = fx.spec(
        "predict",
        &[
            ("csv", "bb.csv"),
            ("images", "images"),
            ("model", "out/bb.safetensors"),
        ],
        &["out/predictions.csv"],
        serde_json::json!({"task": "bbox"}),
    );
    run(&predict, false).unwrap();
    let (header, rows) = read_csv(&fx.path("out/predictions.csv"));
    assert_eq!(header, ["fn", "bbox", "true_bbox", "iou"]);
    assert_eq!(rows.len(), 40);

    let val: std::collections::HashSet<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    let train_boxes: Vec<[f32; 4]> = fx
        .boxes
        .iter()
        .filter(|(f, _)| !val.contains(f.as_str()))
        .map(|(_, b)| *b)
        .collect();
    let mean: [f32; 4] = std::array::from_fn(|k| {
        train_boxes.iter().map(|b| b[k]).sum::<f32>() / train_boxes.len() as f32
    });
    let l1 = |a: [f32; 4], b: [f32; 4]| (0..4).map(|k| (a[k] - b[k]).abs()).sum::<f32>() / 4.0;
    let (mut model_l1, mut mean_l1) = (0.0, 0.0);
    for r in &rows {
        let truth = parse_box(&r[2]);
        assert_eq!(
            truth,
            fx.boxes.iter().find(|(f, _)| *f == r[0]).unwrap().1,
            "true_bbox is the CSV's box"
        );
        model_l1 += l1(parse_box(&r[1]), truth) / rows.len() as f32;
        mean_l1 += l1(mean, truth) / rows.len() as f32;
        let [top, left, bottom, right] = parse_box(&r[1]);
        let (max_y, max_x) = ((H - 1) as f32, (W - 1) as f32);
        assert!(
            [top, bottom].iter().all(|v| (0.0..=max_y).contains(v)),
            "{r:?} leaves the {W}x{H} image"
        );
        assert!(
            [left, right].iter().all(|v| (0.0..=max_x).contains(v)),
            "{r:?} leaves the {W}x{H} image"
        );
        let iou: f32 = r[3].parse().unwrap();
        assert!((iou - trainer::iou(parse_box(&r[1]), truth)).abs() < 1e-3);
    }
    eprintln!(
        "synthetic JPEG boxes: L1 {model_l1:.2} px vs mean box {mean_l1:.2} px (original pixels)"
    );
    assert!(
        model_l1 < 0.6 * mean_l1,
        "L1 {model_l1} vs mean-box {mean_l1}"
    );
}

#[test]
fn combined_model_learns_class_and_box_from_one_head() {
    let fx = Fixture::new(200);
    let mut params = tiny(
        "combined",
        serde_json::json!([{ "fit": { "lr": 2e-2, "cycles": 1, "cycle_len": 8 } }]),
    );
    // The box L1 here is tens of pixels; the lesson's weight keeps the classes in view.
    params["class_loss_weight"] = 20.0.into();
    run(
        &fx.csv_spec(
            "train",
            "lrg_bb.csv",
            &["out/combined.safetensors", "out/combined.csv"],
            params,
        ),
        false,
    )
    .unwrap();
    let (header, rows) = read_csv(&fx.path("out/combined.csv"));
    assert_eq!(
        header,
        ["epoch", "trn_loss", "val_loss", "accuracy", "l1_px", "mean_iou", "iou50", "seconds"]
    );
    assert_eq!(rows.len(), 8);

    let predict = fx.spec(
        "predict",
        &[
            ("csv", "lrg_bb.csv"),
            ("images", "images"),
            ("model", "out/combined.safetensors"),
        ],
        &["out/predictions.csv"],
        serde_json::json!({"task": "combined", "tta": true}),
    );
    run(&predict, false).unwrap();
    let (header, rows) = read_csv(&fx.path("out/predictions.csv"));
    assert_eq!(
        header,
        ["fn", "cat", "true_cat", "prob", "bbox", "true_bbox", "iou"]
    );
    assert_eq!(rows.len(), 40);
    let accuracy = rows.iter().filter(|r| r[1] == r[2]).count() as f64 / rows.len() as f64;
    let mean_iou = rows
        .iter()
        .map(|r| r[6].parse::<f64>().unwrap())
        .sum::<f64>()
        / 40.0;
    eprintln!("synthetic JPEG combined model: accuracy {accuracy:.3}, mean IoU {mean_iou:.3}");
    assert!(accuracy > 0.8, "accuracy {accuracy} (chance 1/3)");
    // A box always in the image's middle half scores about 0.2 on these rectangles.
    assert!(mean_iou > 0.4, "mean IoU {mean_iou}");
    for r in &rows {
        let truth = parse_box(&r[5]);
        assert_eq!(
            truth,
            fx.boxes.iter().find(|(f, _)| *f == r[0]).unwrap().1,
            "true_bbox is the CSV's box"
        );
        let iou: f32 = r[6].parse().unwrap();
        assert!((iou - trainer::iou(parse_box(&r[4]), truth)).abs() < 1e-3);
    }

    // The class weight is the combined model's: another task refuses it by name.
    let mut params = tiny("bbox", serde_json::json!([]));
    params["class_loss_weight"] = 20.0.into();
    let spec = fx.csv_spec(
        "train",
        "bb.csv",
        &["out/x.safetensors", "out/x.csv"],
        params,
    );
    let e = format!("{:#}", run(&spec, false).unwrap_err());
    assert!(e.contains("class_loss_weight"), "{e}");
}

#[test]
fn lr_find_writes_the_curve_and_the_suggestion() {
    let fx = Fixture::new(160);
    let mut params = tiny("classify", serde_json::json!([]));
    params["batch"] = 4.into();
    let spec = fx.csv_spec("lr_find", "lrg.csv", &["out/lr.csv", "out/lr.json"], params);
    run(&spec, false).unwrap();
    let (header, rows) = read_csv(&fx.path("out/lr.csv"));
    assert_eq!(header, ["iteration", "lr", "loss", "smooth_loss"]);
    assert!(rows.len() > 11);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.path("out/lr.json")).unwrap()).unwrap();
    let (suggested, min_loss) = (
        json["suggested_lr"].as_f64().unwrap(),
        json["min_loss_lr"].as_f64().unwrap(),
    );
    assert!(
        (suggested - min_loss / 10.0).abs() < 1e-12 && min_loss > 1e-5 && min_loss < 10.0,
        "{json}"
    );
}

#[test]
fn refuses_a_pretrained_backbone_without_weights() {
    let fx = Fixture::new(10);
    let params = serde_json::json!({"task": "bbox", "backbone": "resnet34", "schedule": []});
    let spec = fx.csv_spec(
        "train",
        "bb.csv",
        &["out/m.safetensors", "out/m.csv"],
        params,
    );
    let err = format!("{:#}", run(&spec, false).unwrap_err());
    assert!(
        err.contains("weights") && err.contains("random_init"),
        "{err}"
    );
}

#[test]
fn rejects_unknown_params_and_bad_fits() {
    let fx = Fixture::new(10);
    let cases = [
        (
            serde_json::json!({"task": "bbox", "random_init": true, "sceduel": []}),
            "sceduel",
        ),
        (
            serde_json::json!({"task": "bbox", "random_init": true, "schedule": [{"fit": {"cycles": 1}}]}),
            "lr",
        ),
        (
            serde_json::json!({"task": "bbox", "random_init": true, "loss": "cross_entropy"}),
            "loss",
        ),
    ];
    for (params, needle) in cases {
        let spec = fx.csv_spec(
            "train",
            "bb.csv",
            &["out/m.safetensors", "out/m.csv"],
            params,
        );
        let err = format!("{:#}", run(&spec, false).unwrap_err());
        assert!(err.contains(needle), "{needle}: {err}");
    }
}

#[test]
fn unreadable_images_are_skipped_and_noted_for_the_runner() {
    let fx = Fixture::new(40);
    let (_, rows) = read_csv(&fx.path("bb.csv"));
    let bad = &rows[0][0];
    std::fs::write(fx.path(&format!("images/{bad}")), b"not a jpeg").unwrap();
    let mut params = tiny(
        "bbox",
        serde_json::json!([{ "fit": { "lr": 1e-3, "cycles": 1 } }]),
    );
    params["on_bad_image"] = "skip".into();
    let spec = fx.csv_spec(
        "train",
        "bb.csv",
        &["out/m.safetensors", "out/m.csv"],
        params,
    );
    run(&spec, false).unwrap();
    let note = std::fs::read_to_string(spec.work_dir.join(pipeline::NOTE_FILE)).unwrap();
    assert!(
        note.starts_with("1 unreadable images skipped") && note.contains(bad.as_str()),
        "{note}"
    );
}
