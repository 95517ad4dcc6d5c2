//! The stage kinds a pipeline file can name, and what runs each one.
//! Kinds that need libtorch run in the trainer's binary; the rest run here.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// What a stage is handed (also the JSON the trainer's binary reads).
#[derive(Serialize, Debug, Clone)]
pub struct StageSpec {
    pub name: String,
    pub kind: String,
    pub inputs: BTreeMap<String, PathBuf>,
    /// Staging paths: renamed into place by the runner after success.
    pub outputs: BTreeMap<String, PathBuf>,
    pub params: serde_json::Value,
    /// Persists between runs of this stage (resume checkpoints).
    pub work_dir: PathBuf,
    pub data_dir: PathBuf,
    /// The stage's fingerprint (input contents, params, code): a checkpoint left in
    /// `work_dir` by a run with another fingerprint must not be resumed.
    pub fingerprint: String,
}

impl StageSpec {
    pub fn input(&self, name: &str) -> Result<&PathBuf> {
        self.inputs.get(name).with_context(|| {
            format!(
                "stage {} ({}) needs an input named {name:?}",
                self.name, self.kind
            )
        })
    }
    pub fn output(&self, name: &str) -> Result<&PathBuf> {
        self.outputs.get(name).with_context(|| {
            format!(
                "stage {} ({}) needs an output named {name:?}",
                self.name, self.kind
            )
        })
    }
}

/// Every stage kind, with the workspace crates whose code it runs (part of
/// its fingerprint).
const KINDS: &[(&str, &[&str])] = &[
    ("exec", &[]),
    (
        "annotations",
        &["voc-annotations", "largest-object", "csv-export"],
    ),
    ("draw", &["viz", "csv-export"]),
    ("augment-grid", &["augment", "viz", "csv-export"]),
    ("plot-lr-find", &["viz"]),
    ("plot-metrics", &["viz"]),
    ("lr_find", TRAINER_CODE),
    ("train", TRAINER_CODE),
    ("predict", TRAINER_CODE),
];

/// The kinds that run in the trainer's binary, and the code they run.
const TRAINER_KINDS: &[&str] = &["lr_find", "train", "predict"];
const TRAINER_CODE: &[&str] = &["trainer", "model-zoo", "augment", "csv-export"];

pub fn kinds() -> Vec<&'static str> {
    KINDS.iter().map(|(k, _)| *k).collect()
}

pub fn code_of(kind: &str) -> &'static [&'static str] {
    KINDS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, c)| *c)
        .unwrap_or(&[])
}

pub fn execute(spec: &StageSpec) -> Result<()> {
    match spec.kind.as_str() {
        "exec" => exec(spec),
        "annotations" => annotations(spec),
        "draw" => draw(spec),
        "augment-grid" => augment_grid(spec),
        "plot-lr-find" => plot_lr_find(spec),
        "plot-metrics" => {
            viz::plot::plot_metrics(spec.input("metrics")?, spec.output("png")?).map_err(Into::into)
        }
        kind if TRAINER_KINDS.contains(&kind) => in_trainer(spec),
        other => bail!("no runner for stage kind {other:?}"),
    }
}

/// The lesson's first cells: annotations (COCO JSON, or VOC XML with
/// `source = "xml"`) -> each image's largest object -> `lrg.csv`, `bb.csv`.
fn annotations(spec: &StageSpec) -> Result<()> {
    let source = spec
        .params
        .get("source")
        .and_then(|v| v.as_str())
        .unwrap_or("json");
    let dataset = match source {
        "json" => voc_annotations::load_coco_json(spec.input("json")?)?,
        "xml" => {
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
            if list != &voc_dir.join("ImageSets/Main").join(format!("{split}.txt")) {
                bail!("stage {}: the split list must be <VOC2007>/ImageSets/Main/<split>.txt beside Annotations, not {}", spec.name, list.display());
            }
            voc_annotations::load_voc_xml(voc_dir, &split)?
        }
        other => bail!(
            "stage {}: params.source must be \"json\" or \"xml\", not {other:?}",
            spec.name
        ),
    };
    let largest = largest_object::largest_objects(&dataset)?;
    largest.write_csvs(spec.output("lrg")?, spec.output("bb")?)?;
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

fn param_u64(spec: &StageSpec, name: &str, default: u64) -> Result<u64> {
    match spec.params.get(name) {
        None => Ok(default),
        Some(v) => v.as_u64().with_context(|| {
            format!(
                "stage {}: params.{name} must be a whole number, not {v}",
                spec.name
            )
        }),
    }
}

/// The first `rows` rows of a CSV artifact (bb.csv, lrg.csv, predictions)
/// drawn on their images: the lesson's way of checking a stage by eye.
fn draw(spec: &StageSpec) -> Result<()> {
    let rows = param_u64(spec, "rows", 12)? as usize;
    // An unreadable image becomes a marked tile, named in a warning and counted
    // ("skip", the default), or fails the stage naming it ("fail").
    let on_bad_image: viz::OnBadImage = match spec.params.get("on_bad_image") {
        Some(v) => serde_json::from_value(v.clone())
            .with_context(|| format!("stage {}: params.on_bad_image", spec.name))?,
        None => viz::OnBadImage::default(),
    };
    let drawn = viz::inspect::draw_artifact_with(
        spec.input("csv")?,
        rows,
        spec.input("images")?,
        spec.output("png")?,
        on_bad_image,
    )?;
    eprintln!("drew {}", drawn.what);
    Ok(())
}

/// What the model sees: the first images of bb.csv (or lrg.csv), each a few
/// times, through the training loader's augmentation, boxes drawn as the
/// loader moved them.
fn augment_grid(spec: &StageSpec) -> Result<()> {
    let csv = spec.input("csv")?;
    let images = spec.input("images")?;
    let size = param_u64(spec, "size", 224)? as u32;
    let seed = param_u64(spec, "seed", 0)?;
    let (distinct, repeats) = (
        param_u64(spec, "images", 4)? as usize,
        param_u64(spec, "repeats", 3)? as usize,
    );
    let augment: augment::AugmentParams = match spec.params.get("augment") {
        Some(v) => serde_json::from_value(v.clone())
            .with_context(|| format!("stage {}: params.augment", spec.name))?,
        None => augment::AugmentParams::default(),
    };
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
        ..augment::LoaderConfig::default()
    };
    let loader = augment::Loader::new(std::sync::Arc::new(items), config);
    let batch = loader.epoch(0).next().context("no images to augment")??;
    let pixels = 3 * (size * size) as usize;
    let tiles: Vec<viz::Tile> = (0..batch.n)
        .map(|i| viz::Tile {
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
            caption: captions[batch.indices[i]].to_string(),
        })
        .collect();
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
    let options = viz::plot::LrFindPlotOptions {
        skip_start: param_u64(spec, "skip_start", 10)? as usize,
        skip_end: param_u64(spec, "skip_end", 5)? as usize,
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
pub fn prepare(stages: &[crate::pipeline::Stage]) -> Result<()> {
    let mut arches: Vec<&str> = Vec::new();
    for stage in stages
        .iter()
        .filter(|s| TRAINER_KINDS.contains(&s.kind.as_str()))
    {
        let random_init = stage
            .params
            .get("random_init")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let arch = stage
            .params
            .get("backbone")
            .and_then(|v| v.as_str())
            .unwrap_or("efficientnet-lite0");
        if !random_init && !arches.contains(&arch) {
            arches.push(arch);
        }
    }
    for arch in arches {
        crate::torch::ensure_weights(arch)?;
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
    let cmd: Vec<String> = serde_json::from_value(
        spec.params.get("cmd").cloned().unwrap_or_default(),
    )
    .with_context(|| format!("stage {}: params.cmd must be a list of strings", spec.name))?;
    let Some((program, args)) = cmd.split_first() else {
        bail!("stage {}: params.cmd is empty", spec.name)
    };
    let mut command = Command::new(program);
    command.args(args);
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
