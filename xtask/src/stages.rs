//! What runs each stage kind ([`pipeline::StageKind`]). Kinds that need libtorch
//! run in the trainer's binary; the rest run here.

use anyhow::{bail, Context, Result};
use pipeline::params::{
    AnnotationSource, AnnotationsParams, AugmentGridParams, DrawOrder, DrawParams, EvaluateParams,
    ExecParams, PlotLrFindParams, TrainParams,
};
use pipeline::{StageKind, StageSpec};
use std::path::Path;
use std::process::Command;

pub fn execute(spec: &StageSpec) -> Result<()> {
    match spec.kind {
        StageKind::Exec => exec(spec),
        StageKind::Annotations => annotations(spec),
        StageKind::Draw => draw(spec),
        StageKind::AugmentGrid => augment_grid(spec),
        StageKind::PlotLrFind => plot_lr_find(spec),
        StageKind::PlotMetrics => {
            viz::plot::plot_metrics(spec.input("metrics")?, spec.output("png")?).map_err(Into::into)
        }
        StageKind::Evaluate => evaluate(spec),
        StageKind::LrFind | StageKind::Train | StageKind::Predict => in_trainer(spec),
    }
}

/// A detector's predictions scored the way the field scores them: VOC mean average
/// precision at IoU 0.5 (both the VOC 2007 11-point figure and the all-point area),
/// difficult objects neither rewarded nor penalised. Inputs: `predictions` and
/// `images` (the predict stage's), `mbb` + `classes` and `difficult` +
/// `difficult_classes` (the annotations stage's). Outputs: `ap` (per-class table,
/// then the mean), `summary` (JSON) and `pr` (precision-recall curves).
fn evaluate(spec: &StageSpec) -> Result<()> {
    use multibox::annotations::{ground_truths, read_boxes};
    use multibox::detections::{read_detections, read_image_list};
    let params: EvaluateParams = spec.params()?;
    let objects = read_boxes(spec.input("mbb")?, spec.input("classes")?)?;
    let difficult = read_boxes(spec.input("difficult")?, spec.input("difficult_classes")?)?;
    let images = read_image_list(spec.input("images")?)?;
    let predictions = spec.input("predictions")?;
    let detections = read_detections(predictions)?;
    let mut classes: Vec<String> = objects
        .iter()
        .chain(&difficult)
        .flat_map(|i| i.classes.iter().cloned())
        .collect();
    classes.sort();
    classes.dedup();
    let names: Vec<&str> = images.iter().map(String::as_str).collect();
    let truths = ground_truths(&names, &objects, &difficult, &classes)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let image_index: std::collections::HashMap<&str, usize> =
        names.iter().enumerate().map(|(i, &n)| (n, i)).collect();
    let class_index: std::collections::HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let scored = detections
        .iter()
        .enumerate()
        .map(|(row, d)| {
            let place = || format!("{}: detection {}", predictions.display(), row + 1);
            Ok(multibox::map::ScoredBox {
                image: *image_index.get(d.file_name.as_str()).with_context(|| {
                    format!(
                        "{}: image {} is not in the scored images",
                        place(),
                        d.file_name
                    )
                })?,
                class: *class_index.get(d.class.as_str()).with_context(|| {
                    format!("{}: class {:?} is not in the annotations", place(), d.class)
                })?,
                score: d.score,
                bbox: d.bbox,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let result = multibox::map::evaluate(&truths, &scored, classes.len(), params.iou_threshold)?;

    let ap_text = multibox::map::format_ap;
    let table = spec.output("ap")?;
    result
        .write_table(table, &classes)
        .with_context(|| format!("writing {}", table.display()))?;
    let by_size: Vec<(&str, multibox::map::SizeRecall)> = multibox::map::ObjectSize::ALL
        .iter()
        .map(|size| size.name())
        .zip(result.recall_by_size())
        .collect();
    let recall_by_size: serde_json::Map<String, serde_json::Value> = by_size
        .iter()
        .map(|(name, size)| {
            let counts = serde_json::json!({
                "objects": size.objects,
                "found": size.found,
                "recall": size.recall(),
            });
            (name.to_string(), counts)
        })
        .collect();
    let summary = serde_json::json!({
        "iou_threshold": params.iou_threshold,
        "images": images.len(),
        "detections": detections.len(),
        "map_11pt": result.map_voc07,
        "map_all": result.map_all_points,
        "recall_by_size": recall_by_size,
    });
    let summary_path = spec.output("summary")?;
    csv_export::write_atomic(summary_path, |out| {
        out.write_all(serde_json::to_string_pretty(&summary)?.as_bytes())
    })?;
    let curves: Vec<viz::plot::PrCurve> = result
        .classes
        .iter()
        .filter_map(|c| {
            Some(viz::plot::PrCurve {
                name: classes[c.class].clone(),
                ap: c.ap_all_points?,
                points: c.curve.iter().map(|p| (p.recall, p.precision)).collect(),
            })
        })
        .collect();
    let title = format!(
        "precision-recall at IoU {}: mAP {} (11-point), {} (all points)",
        params.iou_threshold,
        ap_text(result.map_voc07),
        ap_text(result.map_all_points)
    );
    viz::plot::plot_pr_curves(&curves, &title, spec.output("pr")?)?;

    println!(
        "{:<14} {:>7} {:>9} {:>6} {:>6} {:>8} {:>8}",
        "class", "objects", "difficult", "tp", "fp", "AP 11pt", "AP all"
    );
    for c in &result.classes {
        println!(
            "{:<14} {:>7} {:>9} {:>6} {:>6} {:>8} {:>8}",
            classes[c.class],
            c.positives,
            c.difficult,
            c.true_positives,
            c.false_positives,
            ap_text(c.ap_voc07),
            ap_text(c.ap_all_points)
        );
    }
    println!(
        "{}: mAP@{} {} (VOC 2007 11-point), {} (all points) over {} images, {} detections",
        spec.name,
        params.iou_threshold,
        ap_text(result.map_voc07),
        ap_text(result.map_all_points),
        images.len(),
        detections.len()
    );
    let found: Vec<String> = by_size
        .iter()
        .map(|(name, size)| {
            let percent = size
                .recall()
                .map(|r| format!(" ({:.0}%)", 100.0 * r))
                .unwrap_or_default();
            format!("{name} {} of {}{percent}", size.found, size.objects)
        })
        .collect();
    println!(
        "{}: objects found at IoU {} by size (COCO's areas: small under 32x32 px, large from 96x96): {}",
        spec.name,
        params.iou_threshold,
        found.join(", ")
    );
    // The result in the stage's summary line and report.html, beside the table.
    spec.note(&format!(
        "mAP@{} {} (11-point), {} (all points); found: {}",
        params.iou_threshold,
        ap_text(result.map_voc07),
        ap_text(result.map_all_points),
        found.join(", ")
    ))?;
    Ok(())
}

/// The lesson's first cells: annotations (COCO JSON, or VOC XML with
/// `source = "xml"`) -> each image's largest object -> `lrg.csv`, `bb.csv`, and,
/// when the stage names an output `lrg_bb`, the two joined for the next lesson's
/// combined model; when it names `mbb`, every object for the detector (`mbb`,
/// `mc`, `mbb_classes`, and the difficult boxes `mbb_difficult`,
/// `mbb_difficult_classes` that evaluation ignores).
fn annotations(spec: &StageSpec) -> Result<()> {
    let params: AnnotationsParams = spec.params()?;
    let mut xml_split = None;
    let dataset = match params.source {
        AnnotationSource::Json => voc_annotations::load_coco_json(spec.input("json")?)?,
        AnnotationSource::Xml => {
            // Inputs: the Annotations folder and the split's list (ImageSets/Main/<split>.txt).
            let annotations = spec.input("annotations")?;
            let list = spec.input("list")?;
            let voc_dir = annotations
                .parent()
                .context("the Annotations folder has a parent")?;
            let split = list
                .file_stem()
                .context("a split list file")?
                .to_string_lossy();
            if list != voc_dir.join("ImageSets/Main").join(format!("{split}.txt")) {
                bail!("stage {}: the split list must be <VOC2007>/ImageSets/Main/<split>.txt beside Annotations, not {}", spec.name, list.display());
            }
            let dataset = voc_annotations::load_voc_xml(voc_dir, &split)?;
            xml_split = Some((voc_dir.to_path_buf(), split.into_owned()));
            dataset
        }
    };
    if spec.outputs.contains_key("mbb") {
        let difficult = match &xml_split {
            None => multibox::difficult::difficult_from_coco_json(spec.input("json")?, &dataset)?,
            Some((voc_dir, split)) => {
                multibox::difficult::difficult_from_voc_xml(voc_dir, split, &dataset)?
            }
        };
        let objects = multibox::annotations::multi_objects(&dataset, &difficult)?;
        objects.write_csvs(&multibox::annotations::CsvPaths {
            mbb: spec.output("mbb")?.to_path_buf(),
            mc: spec.output("mc")?.to_path_buf(),
            mbb_classes: spec.output("mbb_classes")?.to_path_buf(),
            difficult_boxes: spec.output("mbb_difficult")?.to_path_buf(),
            difficult_classes: spec.output("mbb_difficult_classes")?.to_path_buf(),
        })?;
        let boxes: usize = objects.objects.iter().map(|i| i.boxes.len()).sum();
        let hard: usize = objects.difficult.iter().map(|i| i.boxes.len()).sum();
        eprintln!(
            "{} images with {boxes} objects in mbb.csv ({:.2} per image), {hard} difficult boxes kept apart for evaluation",
            objects.objects.len(),
            boxes as f64 / objects.objects.len().max(1) as f64
        );
    }
    let largest = largest_object::largest_objects(&dataset)?;
    largest.write_csvs(spec.output("lrg")?, spec.output("bb")?)?;
    if let Some(joined) = spec.outputs.get("lrg_bb") {
        csv_export::write_lrg_bb(joined, &largest.lrg_bb_rows())?;
    }
    eprintln!(
        "{} images, {} usable boxes ({} ignored, {} clamped to their image); {} rows in lrg.csv and bb.csv, {} images without a box left out",
        dataset.images.len(),
        dataset.object_count(),
        dataset.stats.ignored,
        dataset.stats.clamped,
        largest.rows.len(),
        largest.images_without_box
    );
    Ok(())
}

/// `rows` rows of a CSV artifact (bb.csv, lrg.csv, lrg_bb.csv, predictions)
/// drawn on their images: the lesson's way of checking a stage by eye. The
/// first rows, or with `order = "worst"` a predictions CSV's worst rows, to
/// look at what the model gets wrong.
fn draw(spec: &StageSpec) -> Result<()> {
    let params: DrawParams = spec.params()?;
    let on_bad_image = match params.on_bad_image {
        augment::BadImage::Skip => viz::OnBadImage::Skip,
        augment::BadImage::Fail => viz::OnBadImage::Fail,
    };
    let order = match params.order {
        DrawOrder::First => viz::order::RowOrder::First,
        DrawOrder::Worst => viz::order::RowOrder::Worst,
    };
    let drawn = viz::inspect::draw_artifact_with_options(
        spec.input("csv")?,
        spec.input("images")?,
        spec.output("png")?,
        &viz::inspect::DrawOptions {
            rows: params.rows,
            order,
            on_bad_image,
            min_score: params.min_score,
        },
    )?;
    eprintln!("drew {}", drawn.what);
    if let Some((path, reason)) = drawn.unreadable.first() {
        spec.note(&format!(
            "{} unreadable images drawn as marked tiles ({}: {reason})",
            drawn.unreadable.len(),
            path.display()
        ))?;
    }
    Ok(())
}

/// What the model sees: the first images of bb.csv (or lrg.csv), each a few
/// times, through the training loader's augmentation, boxes drawn as the
/// loader moved them.
fn augment_grid(spec: &StageSpec) -> Result<()> {
    let csv = spec.input("csv")?;
    let images = spec.input("images")?;
    let AugmentGridParams {
        size,
        seed,
        images: distinct,
        repeats,
        augment,
        on_bad_image,
    } = spec.params()?;
    // (file, the largest box, every object's box and label, caption). An object's
    // `class` in the loader is its index in its image's list, so that its label
    // follows it through the augmentation, which may drop it.
    type Labelled = (String, Option<[f32; 4]>, Vec<([f32; 4], String)>, String);
    let labelled: Vec<Labelled> = match viz::inspect::detect_kind(csv)? {
        viz::inspect::ArtifactKind::Bb => csv_export::read_bb(csv)?
            .into_iter()
            .map(|r| (r.file_name.clone(), Some(r.bbox), Vec::new(), r.file_name))
            .collect(),
        viz::inspect::ArtifactKind::Lrg => csv_export::read_lrg(csv)?
            .into_iter()
            .map(|r| (r.file_name, None, Vec::new(), r.category))
            .collect(),
        viz::inspect::ArtifactKind::Mbb => {
            let classes = spec.input("classes")?;
            multibox::annotations::read_boxes(csv, classes)?
                .into_iter()
                .map(|i| {
                    let objects = i.boxes.into_iter().zip(i.classes).collect();
                    (i.file_name.clone(), None, objects, i.file_name)
                })
                .collect()
        }
        other => bail!(
            "stage {}: {} is a {other:?} file; augment-grid draws bb.csv, lrg.csv or mbb.csv",
            spec.name,
            csv.display()
        ),
    };
    let folder = csv_export::ImagesDir::new(images);
    let mut items: Vec<augment::Item> = Vec::new();
    let mut object_labels: Vec<Vec<&str>> = Vec::new();
    for (file, bbox, objects, _) in labelled.iter().take(distinct) {
        let path = folder
            .path(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", csv.display()))?;
        let item = augment::Item {
            path,
            class: None,
            bbox: *bbox,
            objects: objects
                .iter()
                .enumerate()
                .map(|(k, (bbox, _))| augment::Object {
                    bbox: *bbox,
                    class: k as i64,
                })
                .collect(),
        };
        items.extend(std::iter::repeat_n(item, repeats));
        let labels: Vec<&str> = objects.iter().map(|(_, label)| label.as_str()).collect();
        object_labels.extend(std::iter::repeat_n(labels, repeats));
    }
    let captions: Vec<&str> = labelled
        .iter()
        .take(distinct)
        .flat_map(|(_, _, _, caption)| std::iter::repeat_n(caption.as_str(), repeats))
        .collect();
    let config = augment::LoaderConfig {
        size,
        batch_size: items.len().max(1),
        workers: 2,
        shuffle: false,
        seed,
        augment: Some(augment),
        on_bad_image,
        ..augment::LoaderConfig::default()
    };
    let paths: Vec<std::path::PathBuf> = items.iter().map(|item| item.path.clone()).collect();
    let loader = augment::Loader::new(std::sync::Arc::new(items), config);
    let mut epoch = loader.epoch(0);
    let batch = epoch.next().transpose()?;
    // An unreadable image is named, counted and drawn as a marked tile (the policy of
    // every picture); `on_bad_image = "fail"` made it an error above.
    let unreadable: Vec<(std::path::PathBuf, String)> = epoch
        .skipped()
        .iter()
        .map(|e| match e {
            augment::LoadError::Io { path, source } => (path.clone(), source.to_string()),
            augment::LoadError::Decode { path, reason } => (path.clone(), reason.clone()),
            other => (
                other.path().unwrap_or(Path::new("")).into(),
                other.to_string(),
            ),
        })
        .collect();
    let pixels = 3 * (size * size) as usize;
    let tiles: Vec<viz::Tile> = (0..paths.len())
        .map(|item| {
            let drawn = batch
                .as_ref()
                .and_then(|b| b.indices.iter().position(|&i| i == item).map(|at| (b, at)));
            match drawn {
                Some((batch, i)) => viz::Tile {
                    image: augment::denorm(
                        &batch.x[i * pixels..(i + 1) * pixels],
                        size,
                        &loader.config().normalisation,
                    ),
                    annotations: batch
                        .boxes
                        .get(i)
                        .map(|b| viz::draw::Annotation::bare_box(*b, viz::draw::WHITE))
                        .into_iter()
                        .chain(batch.objects.get(i).into_iter().flatten().map(|o| {
                            let label = object_labels[item][o.class as usize];
                            viz::draw::Annotation::labelled_box(o.bbox, label, viz::draw::WHITE)
                        }))
                        .collect(),
                    caption: captions[item].to_string(),
                },
                None => {
                    let reason = unreadable
                        .iter()
                        .find(|(path, _)| path == &paths[item])
                        .map_or("not loaded", |(_, reason)| reason.as_str());
                    viz::grid::unreadable_tile(reason, captions[item])
                }
            }
        })
        .collect();
    let mut named: Vec<&(std::path::PathBuf, String)> = unreadable.iter().collect();
    named.dedup_by(|a, b| a.0 == b.0);
    for (path, reason) in &named {
        eprintln!(
            "warning: unreadable image {}: {reason} (drawn as a marked tile)",
            path.display()
        );
    }
    if let Some((path, reason)) = named.first() {
        spec.note(&format!(
            "{} unreadable images drawn as marked tiles ({}: {reason})",
            named.len(),
            path.display()
        ))?;
    }
    let layout = viz::GridLayout {
        rows: distinct.max(1),
        cols: repeats.max(1),
        ..viz::GridLayout::default()
    };
    viz::save_png(
        &viz::grid::render_grid(&tiles, &layout),
        spec.output("png")?,
    )?;
    Ok(())
}

fn plot_lr_find(spec: &StageSpec) -> Result<()> {
    let params: PlotLrFindParams = spec.params()?;
    let options = viz::plot::LrFindPlotOptions {
        skip_start: params.skip_start,
        skip_end: params.skip_end,
        ..Default::default()
    };
    viz::plot::plot_lr_find(
        spec.input("curve")?,
        spec.input("suggestion")?,
        spec.output("png")?,
        &options,
    )?;
    Ok(())
}

/// Before fingerprinting: what trainer stages read from the cache (libtorch,
/// pretrained weights) must exist, so the set-up runs here, once per run.
pub fn prepare(stages: &[pipeline::Stage]) -> Result<()> {
    let mut backbones = Vec::new();
    for stage in stages.iter().filter(|s| s.kind.runs_in_trainer()) {
        // Checked when the pipeline file was loaded.
        let params: TrainParams = serde_json::from_value(stage.params.clone())
            .with_context(|| format!("stage {}: params", stage.name))?;
        if !params.random_init && !backbones.contains(&params.backbone) {
            backbones.push(params.backbone);
        }
    }
    for backbone in backbones {
        crate::torch::ensure_weights(backbone)?;
    }
    Ok(())
}

/// Kinds that need libtorch run in the trainer's binary (built on first use),
/// which reads the spec as JSON.
fn in_trainer(spec: &StageSpec) -> Result<()> {
    let libtorch = crate::torch::ensure_libtorch()?;
    let trainer = crate::torch::trainer_binary(&libtorch)?;
    let spec_file = spec.work_dir.join("spec.json");
    csv_export::write_bytes_atomic(&spec_file, &serde_json::to_vec_pretty(spec)?)?;
    // --resume: a checkpoint in work_dir left by an interrupted run of the same
    // params and inputs is continued; any other is ignored with a warning.
    let status = runner::peak_memory::status(
        Command::new(&trainer)
            .args(["stage", "--resume", "--spec"])
            .arg(&spec_file),
    )
    .with_context(|| format!("stage {}: starting {}", spec.name, trainer.display()))?;
    if !status.success() {
        bail!("stage {}: the trainer exited with {status}", spec.name);
    }
    Ok(())
}

/// A user command, DVC-style: `params.cmd = ["prog", "arg", ...]`; it finds its
/// paths in the environment as IN_<NAME> and OUT_<NAME> (upper-cased).
fn exec(spec: &StageSpec) -> Result<()> {
    let ExecParams { cmd, env } = spec.params()?;
    let Some((program, args)) = cmd.split_first() else {
        bail!("stage {}: params.cmd is empty", spec.name)
    };
    let mut command = Command::new(program);
    command.args(args).envs(&env);
    for (name, path) in &spec.inputs {
        command.env(format!("IN_{}", name.to_uppercase()), path);
    }
    for (name, path) in &spec.outputs {
        command.env(format!("OUT_{}", name.to_uppercase()), path);
    }
    let status = runner::peak_memory::status(&mut command)
        .with_context(|| format!("stage {}: starting {program}", spec.name))?;
    if !status.success() {
        bail!("stage {}: {program} exited with {status}", spec.name);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn spec(
        dir: &Path,
        kind: StageKind,
        inputs: &[(&str, &str)],
        outputs: &[(&str, &str)],
    ) -> StageSpec {
        let paths = |pairs: &[(&str, &str)]| -> BTreeMap<String, PathBuf> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), dir.join(v)))
                .collect()
        };
        StageSpec {
            name: kind.name().into(),
            kind,
            inputs: paths(inputs),
            outputs: paths(outputs),
            params: serde_json::json!({}),
            work_dir: dir.join("work"),
            data_dir: dir.to_path_buf(),
            fingerprint: String::new(),
        }
    }

    /// Two images, three dogs (and a difficult one) and a cat: the counted dog
    /// detections rank hit, miss, hit (recall 1/3, 1/3, 2/3; precision 1, 1/2, 2/3),
    /// so AP is (4 x 1 + 3 x 2/3) / 11 with 11 points and 1/3 + 1/3 x 2/3 over all
    /// points; the detection on the difficult dog is ignored; the cat is never found
    /// (AP 0), and the mean is over both classes.
    #[test]
    fn evaluate_scores_detections_the_voc_way() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let write = |name: &str, text: &str| std::fs::write(d.join(name), text).unwrap();
        write(
            "mbb.csv",
            "fn,bbox\na.jpg,0 0 9 9 20 20 29 29\nb.jpg,0 0 9 9 50 50 59 59\n",
        );
        write("mbb_classes.csv", "fn,clas\na.jpg,dog dog\nb.jpg,cat dog\n");
        write("mbb_difficult.csv", "fn,bbox\nb.jpg,30 30 39 39\n");
        write("mbb_difficult_classes.csv", "fn,clas\nb.jpg,dog\n");
        write("images.csv", "fn\na.jpg\nb.jpg\n");
        write(
            "detections.csv",
            "fn,cat,score,bbox\na.jpg,dog,0.9,0 0 9 9\nb.jpg,dog,0.8,70 70 79 79\n\
             b.jpg,dog,0.75,30 30 39 39\na.jpg,dog,0.7,20 20 29 29\n",
        );
        let stage = spec(
            d,
            StageKind::Evaluate,
            &[
                ("predictions", "detections.csv"),
                ("images", "images.csv"),
                ("mbb", "mbb.csv"),
                ("classes", "mbb_classes.csv"),
                ("difficult", "mbb_difficult.csv"),
                ("difficult_classes", "mbb_difficult_classes.csv"),
            ],
            &[("ap", "ap.csv"), ("summary", "map.json"), ("pr", "pr.png")],
        );
        execute(&stage).unwrap();
        let summary: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(d.join("map.json")).unwrap()).unwrap();
        let dog_11pt = (4.0 + 3.0 * 2.0 / 3.0) / 11.0;
        let dog_all = 1.0 / 3.0 + 1.0 / 3.0 * 2.0 / 3.0;
        let close = |v: &serde_json::Value, want: f64| (v.as_f64().unwrap() - want).abs() < 1e-9;
        assert!(close(&summary["map_11pt"], dog_11pt / 2.0), "{summary}");
        assert!(close(&summary["map_all"], dog_all / 2.0), "{summary}");
        // Every object is 10 x 10 (small); 2 of the 4 non-difficult ones found.
        assert_eq!(
            summary["recall_by_size"],
            serde_json::json!({
                "small": { "objects": 4, "found": 2, "recall": 0.5 },
                "medium": { "objects": 0, "found": 0, "recall": null },
                "large": { "objects": 0, "found": 0, "recall": null },
            }),
            "{summary}"
        );
        let table = std::fs::read_to_string(d.join("ap.csv")).unwrap();
        assert_eq!(
            table,
            format!(
                "class,objects,difficult,true_positives,false_positives,ap_11pt,ap_all\n\
                 cat,1,0,0,0,0.0000,0.0000\ndog,3,1,2,1,{dog_11pt:.4},{dog_all:.4}\n\
                 mean,4,1,2,1,{:.4},{:.4}\n",
                dog_11pt / 2.0,
                dog_all / 2.0
            )
        );
        assert!(d.join("pr.png").is_file());
        // The result is the stage's note: its summary line and report.html show it.
        let note = std::fs::read_to_string(d.join("work").join(pipeline::NOTE_FILE)).unwrap();
        assert_eq!(
            note,
            format!(
                "mAP@0.5 {:.4} (11-point), {:.4} (all points); found: small 2 of 4 (50%), \
                 medium 0 of 0, large 0 of 0",
                dog_11pt / 2.0,
                dog_all / 2.0
            )
        );

        // A detection of an image that was not scored is named, with its row.
        write(
            "detections.csv",
            "fn,cat,score,bbox\nc.jpg,dog,0.9,0 0 9 9\n",
        );
        let e = format!("{:#}", execute(&stage).unwrap_err());
        assert!(
            e.contains("detections.csv: detection 1") && e.contains("c.jpg"),
            "{e}"
        );
    }
}
