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
}

impl StageSpec {
    pub fn input(&self, name: &str) -> Result<&PathBuf> {
        self.inputs.get(name).with_context(|| format!("stage {} ({}) needs an input named {name:?}", self.name, self.kind))
    }
    pub fn output(&self, name: &str) -> Result<&PathBuf> {
        self.outputs.get(name).with_context(|| format!("stage {} ({}) needs an output named {name:?}", self.name, self.kind))
    }
}

/// Every stage kind, with the workspace crates whose code it runs (part of
/// its fingerprint).
const KINDS: &[(&str, &[&str])] = &[
    ("exec", &[]),
    ("annotations", &["voc-annotations", "largest-object", "csv-export"]),
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
    KINDS.iter().find(|(k, _)| *k == kind).map(|(_, c)| *c).unwrap_or(&[])
}

pub fn execute(spec: &StageSpec) -> Result<()> {
    match spec.kind.as_str() {
        "exec" => exec(spec),
        "annotations" => annotations(spec),
        kind if TRAINER_KINDS.contains(&kind) => in_trainer(spec),
        other => bail!("no runner for stage kind {other:?}"),
    }
}

/// The lesson's first cells: annotations (COCO JSON, or VOC XML with
/// `source = "xml"`) -> each image's largest object -> `lrg.csv`, `bb.csv`.
fn annotations(spec: &StageSpec) -> Result<()> {
    let source = spec.params.get("source").and_then(|v| v.as_str()).unwrap_or("json");
    let dataset = match source {
        "json" => voc_annotations::load_coco_json(spec.input("json")?)?,
        "xml" => {
            // Inputs: the Annotations folder and the split's list (ImageSets/Main/<split>.txt).
            let annotations = spec.input("annotations")?;
            let list = spec.input("list")?;
            let voc_dir = annotations.parent().context("the Annotations folder has a parent")?;
            let split = list.file_stem().context("a split list file")?.to_string_lossy();
            if list != &voc_dir.join("ImageSets/Main").join(format!("{split}.txt")) {
                bail!("stage {}: the split list must be <VOC2007>/ImageSets/Main/<split>.txt beside Annotations, not {}", spec.name, list.display());
            }
            voc_annotations::load_voc_xml(voc_dir, &split)?
        }
        other => bail!("stage {}: params.source must be \"json\" or \"xml\", not {other:?}", spec.name),
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

/// Before fingerprinting: what trainer stages read from the cache (libtorch,
/// pretrained weights) must exist, so the set-up runs here, once per run.
pub fn prepare(stages: &[crate::pipeline::Stage]) -> Result<()> {
    let mut arches: Vec<&str> = Vec::new();
    for stage in stages.iter().filter(|s| TRAINER_KINDS.contains(&s.kind.as_str())) {
        let random_init = stage.params.get("random_init").and_then(|v| v.as_bool()).unwrap_or(false);
        let arch = stage.params.get("backbone").and_then(|v| v.as_str()).unwrap_or("efficientnet-lite0");
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
    let status = Command::new(&trainer)
        .args(["stage", "--spec"])
        .arg(&spec_file)
        .status()
        .with_context(|| format!("stage {}: starting {}", spec.name, trainer.display()))?;
    if !status.success() {
        bail!("stage {}: the trainer exited with {status}", spec.name);
    }
    Ok(())
}

/// A user command, DVC-style: `params.cmd = ["prog", "arg", ...]`; it finds its
/// paths in the environment as IN_<NAME> and OUT_<NAME> (upper-cased).
fn exec(spec: &StageSpec) -> Result<()> {
    let cmd: Vec<String> = serde_json::from_value(spec.params.get("cmd").cloned().unwrap_or_default())
        .with_context(|| format!("stage {}: params.cmd must be a list of strings", spec.name))?;
    let Some((program, args)) = cmd.split_first() else { bail!("stage {}: params.cmd is empty", spec.name) };
    let mut command = Command::new(program);
    command.args(args);
    for (name, path) in &spec.inputs {
        command.env(format!("IN_{}", name.to_uppercase()), path);
    }
    for (name, path) in &spec.outputs {
        command.env(format!("OUT_{}", name.to_uppercase()), path);
    }
    let status = command.status().with_context(|| format!("stage {}: starting {program}", spec.name))?;
    if !status.success() {
        bail!("stage {}: {program} exited with {status}", spec.name);
    }
    Ok(())
}
