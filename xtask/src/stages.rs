//! What runs each stage kind ([`pipeline::StageKind`]). Kinds that need libtorch
//! run in the trainer's binary; the rest run here.

use anyhow::{bail, Context, Result};
use pipeline::params::{
    AnnotationSource, AnnotationsParams, AugmentGridParams, DrawOrder, DrawParams, ExecParams,
    PlotLrFindParams, TrainParams,
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
        StageKind::LrFind | StageKind::Train | StageKind::Predict => in_trainer(spec),
    }
}

/// The lesson's first cells: annotations (COCO JSON, or VOC XML with
/// `source = "xml"`) -> each image's largest object -> `lrg.csv`, `bb.csv`, and,
/// when the stage names an output `lrg_bb`, the two joined for the next lesson's
/// combined model.
fn annotations(spec: &StageSpec) -> Result<()> {
    let params: AnnotationsParams = spec.params()?;
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
            voc_annotations::load_voc_xml(voc_dir, &split)?
        }
    };
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
    let labelled: Vec<(String, Option<[f32; 4]>, String)> = match viz::inspect::detect_kind(csv)? {
        viz::inspect::ArtifactKind::Bb => csv_export::read_bb(csv)?
            .into_iter()
            .map(|r| (r.file_name.clone(), Some(r.bbox), r.file_name))
            .collect(),
        viz::inspect::ArtifactKind::Lrg => csv_export::read_lrg(csv)?
            .into_iter()
            .map(|r| (r.file_name, None, r.category))
            .collect(),
        other => bail!(
            "stage {}: {} is a {other:?} file; augment-grid draws bb.csv or lrg.csv",
            spec.name,
            csv.display()
        ),
    };
    let folder = csv_export::ImagesDir::new(images);
    let mut items: Vec<augment::Item> = Vec::new();
    for (file, bbox, _) in labelled.iter().take(distinct) {
        let path = folder
            .path(file)
            .map_err(|e| anyhow::anyhow!("{}: {e}", csv.display()))?;
        items.extend(std::iter::repeat_n(
            augment::Item {
                path,
                class: None,
                bbox: *bbox,
                ..augment::Item::default()
            },
            repeats,
        ));
    }
    let captions: Vec<&str> = labelled
        .iter()
        .take(distinct)
        .flat_map(|(_, _, caption)| std::iter::repeat_n(caption.as_str(), repeats))
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
    let mut arches: Vec<String> = Vec::new();
    for stage in stages.iter().filter(|s| s.kind.runs_in_trainer()) {
        // Checked when the pipeline file was loaded.
        let params: TrainParams = serde_json::from_value(stage.params.clone())
            .with_context(|| format!("stage {}: params", stage.name))?;
        if !params.random_init && !arches.contains(&params.backbone) {
            arches.push(params.backbone);
        }
    }
    for arch in arches {
        crate::torch::ensure_weights(&arch)?;
    }
    Ok(())
}

/// Kinds that need libtorch run in the trainer's binary (built on first use),
/// which reads the spec as JSON.
fn in_trainer(spec: &StageSpec) -> Result<()> {
    let libtorch = crate::torch::ensure_libtorch()?;
    let trainer = crate::torch::trainer_binary(&libtorch)?;
    let spec_file = spec.work_dir.join("spec.json");
    crate::atomic::write(&spec_file, &serde_json::to_vec_pretty(spec)?)?;
    // --resume: a checkpoint in work_dir left by an interrupted run of the same
    // params and inputs is continued; any other is ignored with a warning.
    let status = crate::peak_memory::status(
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
    let status = crate::peak_memory::status(&mut command)
        .with_context(|| format!("stage {}: starting {program}", spec.name))?;
    if !status.success() {
        bail!("stage {}: {program} exited with {status}", spec.name);
    }
    Ok(())
}
