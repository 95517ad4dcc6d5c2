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

/// A train or predict spec for the detector over the fixture's mbb.csv, with
/// `outputs` as (name, path) pairs.
fn detector_spec(
    fx: &Fixture,
    kind: &str,
    extra_inputs: &[(&str, &str)],
    outputs: &[(&str, &str)],
    params: serde_json::Value,
) -> pipeline::StageSpec {
    let mut inputs = serde_json::Map::new();
    for (name, rel) in [
        ("csv", "mbb.csv"),
        ("classes", "mbb_classes.csv"),
        ("images", "images"),
    ]
    .iter()
    .chain(extra_inputs)
    {
        inputs.insert(name.to_string(), fx.path(rel).to_string_lossy().into());
    }
    let outputs: serde_json::Map<String, serde_json::Value> = outputs
        .iter()
        .map(|(name, rel)| (name.to_string(), fx.path(rel).to_string_lossy().into()))
        .collect();
    serde_json::from_value(serde_json::json!({
        "name": kind, "kind": kind, "inputs": inputs, "outputs": outputs, "params": params,
        "work_dir": fx.path(&format!("work/{kind}")), "data_dir": fx.path("."),
    }))
    .unwrap()
}

/// The detector's plumbing end to end, on an EfficientNet-Lite0 from scratch at
/// 128 px (a 4x4 feature map: grids of 4x4 on the map itself, then 2x2 and 1x1
/// after stride-2 convolutions, the lesson's 189 anchors): training
/// writes the mAP columns, prediction writes every detection in original pixels
/// and the list of scored images, and `trainer predict`'s path reports objects.
/// How well the detector learns is tests/ssd.rs's question.
#[test]
fn detector_trains_predicts_and_writes_detections_in_original_pixels() {
    let fx = Fixture::new(120);
    let params = serde_json::json!({
        "task": "ssd", "backbone": "efficientnet-lite0", "random_init": true, "size": 128,
        "batch": 16, "workers": 1, "threads": 2,
        "ssd": { "anchors": { "grids": [4, 2, 1] }, "box_weight": 10.0,
                 "nms": { "score_threshold": 0.05 } },
        "schedule": [{ "fit": { "lr": 3e-3, "cycles": 1, "cycle_len": 4 } }],
    });
    let train = detector_spec(
        &fx,
        "train",
        &[],
        &[("model", "out/ssd.safetensors"), ("metrics", "out/ssd.csv")],
        params.clone(),
    );
    run(&train, false).unwrap();
    let (header, rows) = read_csv(&fx.path("out/ssd.csv"));
    assert_eq!(
        header,
        [
            "epoch",
            "trn_loss",
            "val_loss",
            "map50_11pt",
            "map50_all",
            "box_l1",
            "class_focal",
            "seconds"
        ]
    );
    assert_eq!(rows.len(), 4);
    let loss = |r: &Vec<String>, column: usize| r[column].parse::<f64>().unwrap();
    assert!(rows
        .iter()
        .all(|r| loss(r, 1).is_finite() && loss(r, 2).is_finite()));
    // The training loss, that is; a network from scratch evaluates on BatchNorm
    // statistics of a few steps, so its validation loss says little yet.
    assert!(
        loss(&rows[3], 1) < 0.95 * loss(&rows[0], 1),
        "the training loss did not fall: {rows:?}"
    );
    for r in &rows {
        for column in [3, 4] {
            let map: f64 = r[column].parse().unwrap();
            assert!((0.0..=1.0).contains(&map), "mAP {map} in {r:?}");
        }
        // The validation loss is its two parts, the box L1 weighted by box_weight.
        let parts = 10.0 * loss(r, 5) + loss(r, 6);
        assert!(loss(r, 5) > 0.0 && loss(r, 6) > 0.0, "{r:?}");
        assert!((parts - loss(r, 2)).abs() < 1e-3 * loss(r, 2), "{r:?}");
    }

    let predict = detector_spec(
        &fx,
        "predict",
        &[("model", "out/ssd.safetensors")],
        &[
            ("predictions", "out/detections.csv"),
            ("images", "out/detections_images.csv"),
        ],
        serde_json::json!({"task": "ssd", "workers": 1}),
    );
    run(&predict, false).unwrap();
    let images =
        multibox::detections::read_image_list(&fx.path("out/detections_images.csv")).unwrap();
    assert_eq!(images.len(), 24, "the validation fifth of 120");
    let detections = multibox::detections::read_detections(&fx.path("out/detections.csv")).unwrap();
    assert!(!detections.is_empty(), "nothing above score 0.05");
    for d in &detections {
        assert!(images.contains(&d.file_name), "{d:?}");
        assert!(
            ["blue", "green", "red"].contains(&d.class.as_str()),
            "{d:?}"
        );
        assert!(d.score >= 0.05, "{d:?}");
        let [top, left, bottom, right] = d.bbox;
        assert!(
            0.0 <= top && top <= bottom && bottom <= (H - 1) as f32,
            "{d:?}"
        );
        assert!(
            0.0 <= left && left <= right && right <= (W - 1) as f32,
            "{d:?}"
        );
    }

    // The same model on files, as `cargo xtask predict` runs it.
    let (learner, meta) =
        trainer::stage::load_model(&fx.path("out/ssd.safetensors"), tch::Device::Cpu).unwrap();
    let files: Vec<_> = images
        .iter()
        .map(|f| fx.path(&format!("images/{f}")))
        .collect();
    // The stage's batch, so that both passes compute the same batches.
    let options = trainer::infer::PredictOptions {
        top: 1,
        batch: 16,
        workers: 1,
        tta: false,
    };
    let answers =
        trainer::infer::predict_images(&learner, &meta, &files, &options, &mut |_| {}).unwrap();
    let from_files: usize = answers.iter().map(|a| a.objects.len()).sum();
    assert_eq!(
        from_files,
        detections.len(),
        "the stage and predict disagree"
    );

    // Anchor grids the head cannot make are refused, naming the ones it can.
    let mut params = params;
    params["ssd"]["anchors"]["grids"] = serde_json::json!([8, 4, 2]);
    let spec = detector_spec(
        &fx,
        "train",
        &[],
        &[("model", "out/x.safetensors"), ("metrics", "out/x.csv")],
        params,
    );
    let e = format!("{:#}", run(&spec, false).unwrap_err());
    assert!(e.contains("[2, 1, 1]"), "{e}");
}

/// A detector reading the stride-16 map beside the last (`ssd.features`)
/// trains, and its model file rebuilds the same head: at 128 px Lite0's 8x8
/// stride-16 map folds onto the 4x4 last map (1280 + 4 x 112 channels into the
/// head), and a model that forgot the option would not load its weights.
#[test]
fn a_detector_reading_the_stride16_map_trains_and_reloads() {
    let fx = Fixture::new(40);
    let params = serde_json::json!({
        "task": "ssd", "backbone": "efficientnet-lite0", "random_init": true, "size": 128,
        "batch": 16, "workers": 1, "threads": 2,
        "ssd": { "anchors": { "grids": [4, 2, 1] }, "features": "with_stride16" },
        "schedule": [{ "fit": { "lr": 3e-3, "cycles": 1, "cycle_len": 1 } }],
    });
    let train = detector_spec(
        &fx,
        "train",
        &[],
        &[("model", "out/ssd.safetensors"), ("metrics", "out/ssd.csv")],
        params,
    );
    run(&train, false).unwrap();
    let (_, rows) = read_csv(&fx.path("out/ssd.csv"));
    assert_eq!(rows.len(), 1);

    let (learner, meta) =
        trainer::stage::load_model(&fx.path("out/ssd.safetensors"), tch::Device::Cpu).unwrap();
    let files = [fx.path(&format!("images/{}", fx.boxes[0].0))];
    let options = trainer::infer::PredictOptions {
        top: 1,
        batch: 1,
        workers: 1,
        tta: false,
    };
    let answers =
        trainer::infer::predict_images(&learner, &meta, &files, &options, &mut |_| {}).unwrap();
    assert_eq!(answers.len(), 1);
}
