//! The training stages the pipeline runner hands to `trainer stage --spec spec.json`:
//! `lr_find`, `train` and `predict`, configured by the stage's `params` (from the
//! pipeline TOML).
//!
//! Inputs (by name): `csv` (lrg.csv for `task = "classify"`, bb.csv for `"bbox"`,
//! lrg_bb.csv for `"combined"`),
//! `images` (the folder the CSV's file names are in), `weights` (the backbone's
//! pretrained safetensors; may be absent only with `random_init = true`), `model`
//! (predict: a model the train stage wrote), `val` (optional: the validation images,
//! as a JSON array of file names or a CSV whose first column is `fn`).
//! Outputs (by name): train writes `model` (safetensors) and `metrics` (CSV); lr_find
//! `curve` (CSV) and `suggestion` (JSON); predict `predictions` (CSV). The spec and the
//! params are the `pipeline` crate's types, shared with the runner.

use crate::checkpoint;
use crate::data::{cv_indices, Batch, DataSource};
use crate::learner::{
    EpochEnd, EpochRecord, FitConfig, FitPosition, FitResume, Learner, LrFindResult,
};
use crate::model::{LayeredModel, TinyCnn};
use crate::optim::{Method, OptimiserConfig};
use crate::task::{detection_in_original_pixels, iou, unsquash_box, Task};
use crate::TrainError;
use anyhow::{bail, Context, Result};
use augment::Normalisation;
use model_zoo::ssd_grid_sides;
use multibox::detections::{write_detections, write_image_list, DetectionRow};
use pipeline::params::{FitStep, OptimiserName, Step, TaskKind, TrainParams as Params};
use pipeline::{StageKind, StageSpec};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tch::{nn, Device, Tensor};

/// A fit step as the learner's configuration (the step was checked when the pipeline
/// file was loaded; checked again here for specs written by hand).
fn fit_config(step: &FitStep) -> Result<FitConfig> {
    step.check().map_err(anyhow::Error::msg)?;
    Ok(FitConfig {
        lrs: step.learning_rates().map_err(anyhow::Error::msg)?,
        cycles: step.cycles,
        cycle_len: step.cycle_len,
        cycle_mult: step.cycle_mult,
        use_clr: step.use_clr,
    })
}

/// The layout of model files this build writes and reads. Files without the field
/// were written before it existed, in layout 1.
pub const MODEL_FORMAT: u32 = 1;

fn model_format_1() -> u32 {
    1
}

fn imagenet() -> Normalisation {
    // Model files from before the field existed were all trained on ImageNet-normalised input.
    Normalisation::IMAGENET
}

/// The metadata of model files and checkpoints (JSON in the safetensors header): all
/// that prediction needs besides the weights.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ModelMeta {
    #[serde(default = "model_format_1")]
    pub format: u32,
    /// The input normalisation the model was trained with (prediction applies it too).
    #[serde(default = "imagenet")]
    pub normalisation: Normalisation,
    pub arch: String,
    /// `classifier` (fastai's default head), `flatten_linear` (the lesson's bbox head) or
    /// `flatten_mlp` (the next lesson's combined head).
    pub head: String,
    pub task: Task,
    pub size: u32,
    /// How the validation set was drawn, so `predict` scores the same images.
    pub val_fraction: f64,
    pub seed: u64,
    pub metrics: Vec<EpochRecord>,
    /// Checkpoints only: where the run stands.
    #[serde(default)]
    pub resume: Option<ResumePoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumePoint {
    /// Identifies the run (params and inputs); a checkpoint of another run is not resumed.
    pub run_key: String,
    /// Index of the schedule step in progress.
    pub step: usize,
    /// Epochs completed across the whole schedule.
    pub epochs_done: usize,
    pub fit: FitPosition,
}

/// Any of the networks a stage can build.
pub enum AnyModel {
    Zoo(model_zoo::Net),
    Tiny(TinyCnn),
}

impl LayeredModel for AnyModel {
    fn forward(&self, x: &Tensor, train_groups: &[bool]) -> Tensor {
        match self {
            AnyModel::Zoo(net) => net.forward(x, train_groups),
            AnyModel::Tiny(net) => LayeredModel::forward(net, x, train_groups),
        }
    }
    fn n_groups(&self) -> usize {
        match self {
            AnyModel::Zoo(net) => net.n_groups(),
            AnyModel::Tiny(net) => LayeredModel::n_groups(net),
        }
    }
    fn group_of(&self, var: &str) -> usize {
        match self {
            AnyModel::Zoo(net) => net.group_of(var),
            AnyModel::Tiny(net) => LayeredModel::group_of(net, var),
        }
    }
}

impl LayeredModel for model_zoo::Net {
    fn forward(&self, x: &Tensor, train_groups: &[bool]) -> Tensor {
        model_zoo::Net::forward(self, x, train_groups)
    }
    fn n_groups(&self) -> usize {
        model_zoo::Net::n_groups(self)
    }
    fn group_of(&self, var: &str) -> usize {
        model_zoo::Net::group_of(self, var)
    }
}

/// The torch device: CUDA when available.
pub fn device() -> Device {
    Device::cuda_if_available()
}

pub fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The input normalisation the backbone's pretrained weights expect (ImageNet's for
/// the test network, which has none).
fn backbone_normalisation(backbone: &str) -> Result<Normalisation> {
    if backbone == "tiny-cnn" {
        return Ok(Normalisation::IMAGENET);
    }
    let (mean, std) = backbone.parse::<model_zoo::Arch>()?.input_normalization();
    Ok(Normalisation { mean, std })
}

/// Width of the combined model's hidden layer (the next lesson's 256).
const COMBINED_HIDDEN: i64 = 256;

/// Builds the network for `arch` with the task's head on `device`.
fn build_learner(
    arch: &str,
    task: Task,
    size: u32,
    device: Device,
) -> Result<(Learner<AnyModel>, String)> {
    let vs = nn::VarStore::new(device);
    let (model, head) = if arch == "tiny-cnn" {
        if matches!(task, Task::Ssd { .. }) {
            bail!(
                "the tiny-cnn test network has no detector head; use an efficientnet-lite backbone"
            );
        }
        (
            AnyModel::Tiny(TinyCnn::new(&vs.root(), task.outputs())),
            "linear".to_string(),
        )
    } else {
        let zoo_arch: model_zoo::Arch = arch.parse()?;
        let (spec, head) = match &task {
            Task::Classify { classes } => (
                model_zoo::HeadSpec::Classifier {
                    classes: classes.len() as i64,
                },
                "classifier",
            ),
            Task::Bbox => (
                model_zoo::HeadSpec::FlattenLinear { outputs: 4 },
                "flatten_linear",
            ),
            Task::Combined { .. } => (
                model_zoo::HeadSpec::FlattenMlp {
                    hidden: COMBINED_HIDDEN,
                    outputs: task.outputs(),
                },
                "flatten_mlp",
            ),
            Task::Ssd { classes, params } => {
                let anchors = &params.anchors;
                let feature_side = zoo_arch.feature_size(size as i64);
                let wanted: Vec<i64> = anchors.grids.iter().map(|&g| g as i64).collect();
                // A first grid of the feature map's own side is predicted on the map
                // itself (the lesson's unused out0); the others after stride-2 convolutions.
                let feature_grid = wanted.len() > 1 && wanted[0] == feature_side;
                let grids = wanted.len() as i64 - i64::from(feature_grid);
                let mut sides = ssd_grid_sides(feature_side, grids);
                if feature_grid {
                    sides.insert(0, feature_side);
                }
                if sides != wanted {
                    let plain = ssd_grid_sides(feature_side, wanted.len() as i64);
                    bail!(
                        "ssd.anchors.grids = {wanted:?}, but on {arch}'s {feature_side}x{feature_side} \
                         feature map at {size} px the head's grids are {plain:?} (stride-2 \
                         convolutions), optionally after the map's own {feature_side}; set grids \
                         to {plain:?} (or change size)"
                    );
                }
                (
                    model_zoo::HeadSpec::Ssd {
                        feature_grid,
                        grids,
                        anchors_per_cell: anchors.anchors_per_cell() as i64,
                        classes: classes.len() as i64,
                    },
                    "ssd",
                )
            }
        };
        (
            AnyModel::Zoo(model_zoo::Net::new(&vs.root(), zoo_arch, spec, size as i64)),
            head.to_string(),
        )
    };
    Ok((Learner::new(vs, model, task, size as usize), head))
}

/// One CSV row, whatever the task.
#[derive(Default)]
struct Row {
    file_name: String,
    category: Option<String>,
    bbox: Option<[f32; 4]>,
    /// The detector's: every object's box (inclusive pixels) and class name.
    objects: Vec<([f32; 4], String)>,
}

/// The task's rows: from `csv` (and, for the detector, the per-box classes in
/// `box_classes`, the stage's `classes` input).
fn read_rows(task: TaskKind, csv: &Path, box_classes: Option<&PathBuf>) -> Result<Vec<Row>> {
    Ok(match task {
        TaskKind::Classify => csv_export::read_lrg(csv)?
            .into_iter()
            .map(|r| Row {
                file_name: r.file_name,
                category: Some(r.category),
                ..Row::default()
            })
            .collect(),
        TaskKind::Bbox => csv_export::read_bb(csv)?
            .into_iter()
            .map(|r| Row {
                file_name: r.file_name,
                bbox: Some(r.bbox),
                ..Row::default()
            })
            .collect(),
        TaskKind::Combined => csv_export::read_lrg_bb(csv)?
            .into_iter()
            .map(|r| Row {
                file_name: r.file_name,
                category: Some(r.category),
                bbox: Some(r.bbox),
                ..Row::default()
            })
            .collect(),
        TaskKind::Ssd => {
            let classes = box_classes.context(
                "task ssd needs a `classes` input: the per-box classes (mbb_classes.csv) beside mbb.csv",
            )?;
            multibox::annotations::read_boxes(csv, classes)?
                .into_iter()
                .map(|image| Row {
                    file_name: image.file_name,
                    objects: image.boxes.into_iter().zip(image.classes).collect(),
                    ..Row::default()
                })
                .collect()
        }
    })
}

/// File names listed in a validation file: a JSON array of names, or a CSV with a
/// header whose first column holds them.
fn read_val_names(path: &Path) -> Result<HashSet<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "json") {
        let names: Vec<String> = serde_json::from_str(&text)
            .with_context(|| format!("{}: expected a JSON array of file names", path.display()))?;
        return Ok(names.into_iter().collect());
    }
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let mut names = HashSet::new();
    for (i, record) in reader.records().enumerate() {
        let record = record.with_context(|| format!("{}:{}", path.display(), i + 2))?;
        let name = record
            .get(0)
            .filter(|s| !s.is_empty())
            .with_context(|| format!("{}:{}: empty file name", path.display(), i + 2))?;
        names.insert(name.to_string());
    }
    Ok(names)
}

/// Rows split into (training, validation) row indices.
fn split(
    rows: &[Row],
    val_file: Option<&PathBuf>,
    val_fraction: f64,
    seed: u64,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let val: Vec<usize> = match val_file {
        Some(path) => {
            let names = read_val_names(path)?;
            let val: Vec<usize> = (0..rows.len())
                .filter(|&i| names.contains(&rows[i].file_name))
                .collect();
            if val.len() < names.len() {
                tracing::warn!(
                    "{}: {} of its {} names are not in the training CSV",
                    path.display(),
                    names.len() - val.len(),
                    names.len()
                );
            }
            val
        }
        None => {
            if !(0.0..1.0).contains(&val_fraction) {
                bail!("val_fraction must be in [0, 1), got {val_fraction}");
            }
            cv_indices(rows.len(), val_fraction, seed)
        }
    };
    let is_val: HashSet<usize> = val.iter().copied().collect();
    let train = (0..rows.len()).filter(|i| !is_val.contains(i)).collect();
    Ok((train, val))
}

/// The `augment` loader as a `DataSource`, remembering the images it skipped.
pub struct LoaderSource {
    loader: augment::Loader,
    /// Unreadable images any epoch skipped (`on_bad_image = "skip"`), with why.
    unreadable: Arc<std::sync::Mutex<std::collections::BTreeMap<PathBuf, String>>>,
}

impl LoaderSource {
    pub fn new(items: Vec<augment::Item>, config: augment::LoaderConfig) -> LoaderSource {
        LoaderSource {
            loader: augment::Loader::new(Arc::new(items), config),
            unreadable: Arc::default(),
        }
    }

    pub fn unreadable(&self) -> Vec<(PathBuf, String)> {
        let seen = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().map(|(p, r)| (p.clone(), r.clone())).collect()
    }
}

impl DataSource for LoaderSource {
    fn n_batches(&self) -> usize {
        self.loader.batches_per_epoch()
    }
    fn n_items(&self) -> usize {
        self.loader.items().len()
    }
    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_> {
        let mut epoch = self.loader.epoch(epoch as u64);
        let seen = self.unreadable.clone();
        let recorded = std::iter::from_fn(move || {
            let next = epoch.next();
            if next.is_none() {
                let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                for error in epoch.skipped() {
                    if let Some(path) = error.path() {
                        seen.insert(path.to_path_buf(), error.to_string());
                    }
                }
            }
            next
        });
        Box::new(recorded.map(|batch| {
            batch
                .map(|b| Batch {
                    x: b.x,
                    n: b.n,
                    size: b.size as usize,
                    classes: b.classes,
                    boxes: b.boxes,
                    objects: b.objects,
                    indices: b.indices,
                    orig_sizes: b.orig_sizes,
                })
                .map_err(TrainError::Load)
        }))
    }
}

/// Everything a stage needs about its data.
struct Prepared {
    rows: Vec<Row>,
    task: Task,
    train_rows: Vec<usize>,
    val_rows: Vec<usize>,
    train: LoaderSource,
    valid: LoaderSource,
}

fn prepare(
    spec: &StageSpec,
    params: &Params,
    normalisation: Normalisation,
    classes: Option<Vec<String>>,
    val_fraction: f64,
    seed: u64,
) -> Result<Prepared> {
    let csv = spec.input("csv")?;
    let images = spec.input("images")?;
    let rows = read_rows(params.task, csv, spec.inputs.get("classes"))?;
    if rows.is_empty() {
        bail!("{}: no rows", csv.display());
    }
    let classes = || {
        classes.unwrap_or_else(|| {
            let mut names: Vec<String> = rows
                .iter()
                .flat_map(|r| r.category.iter().chain(r.objects.iter().map(|(_, c)| c)))
                .cloned()
                .collect();
            names.sort();
            names.dedup();
            names
        })
    };
    let task = match params.task {
        TaskKind::Bbox => Task::Bbox,
        TaskKind::Classify => Task::Classify { classes: classes() },
        TaskKind::Combined => Task::Combined {
            classes: classes(),
            class_weight: params
                .class_loss_weight
                .unwrap_or(pipeline::params::LESSON_CLASS_LOSS_WEIGHT),
        },
        TaskKind::Ssd => Task::Ssd {
            classes: classes(),
            params: params.ssd.clone().unwrap_or_default(),
        },
    };
    let class_index: HashMap<&str, i64> = task
        .classes()
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i as i64))
        .collect();
    // Every image must lie inside the images folder (no absolute paths, `..`
    // or symlinks leading out).
    let images_dir = csv_export::ImagesDir::new(images);
    let mut items = Vec::with_capacity(rows.len());
    for row in &rows {
        let index_of = |c: &str| {
            class_index.get(c).copied().with_context(|| {
                format!(
                    "{}: class {c:?} of {} is not one the model knows",
                    csv.display(),
                    row.file_name
                )
            })
        };
        let class = row.category.as_deref().map(index_of).transpose()?;
        let objects = row
            .objects
            .iter()
            .map(|(bbox, c)| {
                Ok(augment::Object {
                    bbox: *bbox,
                    class: index_of(c)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        items.push(augment::Item {
            path: images_dir
                .path(&row.file_name)
                .map_err(|e| anyhow::anyhow!("{}: {e}", csv.display()))?,
            class,
            bbox: row.bbox,
            objects,
        });
    }
    let (train_rows, val_rows) = split(&rows, spec.inputs.get("val"), val_fraction, seed)?;
    if val_rows.is_empty() {
        bail!(
            "the validation set is empty (val_fraction {val_fraction} of {} rows)",
            rows.len()
        );
    }
    let workers = params.workers.unwrap_or_else(cores);
    let base = augment::LoaderConfig {
        size: params.size,
        batch_size: params.batch,
        workers,
        prefetch: 2,
        shuffle: true,
        seed: params.seed,
        augment: params.augment,
        drop_last: false,
        on_bad_image: params.on_bad_image,
        normalisation,
        orientation: augment::Orientation::AsStored,
    };
    // A last batch of one image would make BatchNorm's batch statistics degenerate.
    let drop_last = train_rows.len() % params.batch == 1;
    let train_items = train_rows.iter().map(|&i| items[i].clone()).collect();
    let val_items = val_rows.iter().map(|&i| items[i].clone()).collect();
    let train = LoaderSource::new(
        train_items,
        augment::LoaderConfig {
            drop_last,
            ..base.clone()
        },
    );
    let valid = LoaderSource::new(
        val_items,
        augment::LoaderConfig {
            shuffle: false,
            augment: None,
            ..base
        },
    );
    Ok(Prepared {
        rows,
        task,
        train_rows,
        val_rows,
        train,
        valid,
    })
}

fn parse_params(spec: &StageSpec) -> Result<Params> {
    let params: Params = spec.params()?;
    params
        .check()
        .map_err(|e| anyhow::anyhow!("stage {}: params: {e}", spec.name))?;
    Ok(params)
}

/// Runs one stage; `resume` continues from the checkpoint in `work_dir` if it is this run's.
pub fn run(spec: &StageSpec, resume: bool) -> Result<()> {
    run_observed(spec, resume, &mut |_| Ok(()))
}

/// `run`, calling `after_checkpoint(epochs_done)` each time training has written its
/// checkpoint. An error from it stops the stage right there, leaving the work folder as a
/// kill at that moment would: how tests interrupt a run to check that it resumes exactly.
pub fn run_observed(
    spec: &StageSpec,
    resume: bool,
    after_checkpoint: &mut dyn FnMut(usize) -> Result<(), TrainError>,
) -> Result<()> {
    let params = parse_params(spec)?;
    tch::set_num_threads(params.threads.unwrap_or_else(cores) as i32);
    match spec.kind {
        StageKind::Train | StageKind::LrFind => train(spec, &params, resume, after_checkpoint),
        StageKind::Predict => predict(spec, &params),
        other => {
            bail!("the trainer does not run stage kind {other} (it runs lr_find, train, predict)")
        }
    }
}

fn run_key(spec: &StageSpec) -> String {
    let text = serde_json::json!({
        "kind": spec.kind,
        "inputs": spec.inputs,
        "params": spec.params,
        "fingerprint": spec.fingerprint,
    })
    .to_string();
    blake3::hash(text.as_bytes()).to_hex().to_string()
}

fn checkpoint_path(spec: &StageSpec) -> PathBuf {
    spec.work_dir.join("checkpoint.safetensors")
}

/// The train and lr_find kinds: build the learner and run the schedule.
fn train(
    spec: &StageSpec,
    params: &Params,
    resume: bool,
    after_checkpoint: &mut dyn FnMut(usize) -> Result<(), TrainError>,
) -> Result<()> {
    let lr_find_kind = spec.kind == StageKind::LrFind;
    let normalisation = backbone_normalisation(&params.backbone)?;
    let data = prepare(
        spec,
        params,
        normalisation,
        None,
        params.val_fraction,
        params.seed,
    )?;
    let device = device();
    // Seeds the initialisation of the head (and of everything under random_init).
    tch::manual_seed(params.seed as i64);
    let (mut learner, head) =
        build_learner(&params.backbone, data.task.clone(), params.size, device)?;
    let method = match params.optimiser {
        OptimiserName::Adam => Method::ADAM,
        OptimiserName::Sgd => Method::Sgd {
            momentum: params.momentum,
        },
    };
    learner.optimiser = OptimiserConfig {
        method,
        weight_decay: params.weight_decay,
    };
    learner.seed = params.seed;
    match (spec.inputs.get("weights"), params.random_init) {
        (_, true) => {
            tracing::info!("random_init: every layer starts from its initialisation, all groups trainable");
        }
        (Some(weights), false) => {
            let arch: model_zoo::Arch = params.backbone.parse()?;
            let report = model_zoo::load_backbone(&mut learner.vs, arch, weights)?;
            tracing::info!("{}: {} backbone variables loaded", weights.display(), report.loaded);
            // fastai's ConvLearner.pretrained starts with the body frozen.
            learner.freeze_to(-1);
        }
        (None, false) => bail!(
            "stage {}: no `weights` input for the pretrained {} backbone; add one, or set random_init = true to train from scratch",
            spec.name,
            params.backbone
        ),
    }
    eprintln!(
        "{}: {} training / {} validation images, {} on {:?}, {} torch threads",
        spec.name,
        data.train_rows.len(),
        data.val_rows.len(),
        params.backbone,
        device,
        tch::get_num_threads()
    );

    let run_key = run_key(spec);
    let ckpt = checkpoint_path(spec);
    let mut meta = ModelMeta {
        format: MODEL_FORMAT,
        normalisation,
        arch: params.backbone.clone(),
        head,
        task: data.task.clone(),
        size: params.size,
        val_fraction: params.val_fraction,
        seed: params.seed,
        metrics: Vec::new(),
        resume: None,
    };
    let mut resume_from: Option<(ResumePoint, HashMap<String, Tensor>)> = None;
    if resume && ckpt.exists() {
        let (tensors, saved) = checkpoint::load(&ckpt)?;
        let saved: ModelMeta = serde_json::from_value(saved)
            .with_context(|| format!("{}: bad metadata", ckpt.display()))?;
        match saved.resume {
            Some(point) if point.run_key == run_key => {
                checkpoint::copy_into(&learner.vs, &tensors, &ckpt)?;
                eprintln!(
                    "resuming from {} after {} epochs",
                    ckpt.display(),
                    point.epochs_done
                );
                meta.metrics = saved.metrics;
                resume_from = Some((point, tensors));
            }
            _ => tracing::warn!(
                "{}: a checkpoint of another run (params or inputs differ); starting afresh",
                ckpt.display()
            ),
        }
    }

    let mut schedule = params.schedule.clone();
    if lr_find_kind && !schedule.iter().any(|s| matches!(s, Step::LrFind(_))) {
        schedule.push(Step::LrFind(params.lr_find.clone().unwrap_or_default()));
    }
    let mut epochs_done = 0usize;
    let mut lr_finds = 0usize;
    for (step_index, step) in schedule.iter().enumerate() {
        let resume_step = resume_from.as_ref().map(|(p, _)| p.step);
        let done_before = resume_step.is_some_and(|s| step_index < s);
        match step {
            Step::FreezeTo(n) => learner.freeze_to(*n),
            Step::Unfreeze(true) => learner.unfreeze(),
            Step::Unfreeze(false) => {}
            Step::LrFind(_) if done_before => lr_finds += 1,
            Step::LrFind(range) => {
                let found = learner.lr_find(&data.train, &[range.start], range.end, epochs_done)?;
                let (curve, json) = if lr_find_kind && lr_finds == 0 {
                    (
                        spec.output("curve")?.to_path_buf(),
                        spec.output("suggestion")?.to_path_buf(),
                    )
                } else {
                    (
                        spec.work_dir.join(format!("lr_find_{step_index}.csv")),
                        spec.work_dir.join(format!("lr_find_{step_index}.json")),
                    )
                };
                write_lr_find(&curve, &json, &found)?;
                println!(
                    "lr_find: lowest smoothed loss at lr {:.2e}; suggested lr {:.2e} (a tenth of it); curve in {}",
                    found.min_loss_lr,
                    found.suggested_lr,
                    curve.display()
                );
                lr_finds += 1;
            }
            Step::Fit(fit) => {
                let config = fit_config(fit)?;
                if done_before {
                    epochs_done += config.epochs();
                    continue;
                }
                let resume = match resume_from.take() {
                    Some((point, tensors)) if point.step == step_index => {
                        epochs_done = point.epochs_done - point.fit.epochs_done;
                        Some(FitResume {
                            position: point.fit,
                            optimiser_tensors: tensors,
                        })
                    }
                    other => {
                        resume_from = other;
                        None
                    }
                };
                let first_epoch = epochs_done;
                let metrics_path = if lr_find_kind {
                    None
                } else {
                    Some(spec.output("metrics")?.to_path_buf())
                };
                let mut on_epoch_end = |end: EpochEnd<'_>| -> Result<(), TrainError> {
                    meta.metrics.push(end.record.clone());
                    let run_epochs_done = first_epoch + end.position.epochs_done;
                    meta.resume = Some(ResumePoint {
                        run_key: run_key.clone(),
                        step: step_index,
                        epochs_done: run_epochs_done,
                        fit: end.position.clone(),
                    });
                    let mut tensors: Vec<(String, Tensor)> =
                        end.vs.variables().into_iter().collect();
                    tensors.extend(end.optimiser.state_tensors());
                    checkpoint::save(&ckpt, &tensors, &meta)?;
                    if let Some(path) = &metrics_path {
                        write_metrics(path, &meta.task, &meta.metrics)
                            .map_err(|e| TrainError::Data(format!("{e:#}")))?;
                    }
                    after_checkpoint(run_epochs_done)
                };
                learner.fit(
                    &data.train,
                    &data.valid,
                    &config,
                    first_epoch,
                    resume,
                    &mut on_epoch_end,
                )?;
                epochs_done = first_epoch + config.epochs();
            }
        }
    }
    if !lr_find_kind {
        meta.resume = None;
        let tensors: Vec<(String, Tensor)> = learner.vs.variables().into_iter().collect();
        checkpoint::save(spec.output("model")?, &tensors, &meta)?;
        write_metrics(spec.output("metrics")?, &meta.task, &meta.metrics)?;
    }
    note_unreadable(spec, &data)
}

/// Tells the runner (through `note.txt` in the work folder, which it shows in the
/// stage's summary line and in report.html) how many images were skipped as unreadable.
fn note_unreadable(spec: &StageSpec, data: &Prepared) -> Result<()> {
    let mut unreadable = data.train.unreadable();
    unreadable.extend(data.valid.unreadable());
    unreadable.sort();
    unreadable.dedup_by(|a, b| a.0 == b.0);
    if let Some((_, first)) = unreadable.first() {
        spec.note(&format!(
            "{} unreadable images skipped ({first})",
            unreadable.len()
        ))?;
    }
    Ok(())
}

fn write_lr_find(curve: &Path, json: &Path, found: &LrFindResult) -> Result<()> {
    csv_export::create_parent(curve)?;
    csv_export::create_parent(json)?;
    csv_export::write_atomic(curve, |out| {
        csv_export::write_record(out, &["iteration", "lr", "loss", "smooth_loss"])?;
        for p in &found.points {
            csv_export::write_record(
                out,
                &[
                    &p.iteration.to_string(),
                    &p.lr.to_string(),
                    &p.loss.to_string(),
                    &p.smooth_loss.to_string(),
                ],
            )?;
        }
        Ok(())
    })?;
    let body =
        serde_json::json!({"suggested_lr": found.suggested_lr, "min_loss_lr": found.min_loss_lr});
    csv_export::write_atomic(json, |out| {
        out.write_all(serde_json::to_string_pretty(&body)?.as_bytes())
    })?;
    Ok(())
}

/// The metrics CSV: `epoch,trn_loss,val_loss,<metrics...>,seconds`.
pub fn write_metrics(path: &Path, task: &Task, records: &[EpochRecord]) -> Result<()> {
    csv_export::create_parent(path)?;
    csv_export::write_atomic(path, |out| {
        let mut header = vec!["epoch", "trn_loss", "val_loss"];
        header.extend(task.metric_names());
        header.push("seconds");
        csv_export::write_record(out, &header)?;
        for r in records {
            let mut fields = vec![
                r.epoch.to_string(),
                r.trn_loss.to_string(),
                r.val_loss.to_string(),
            ];
            fields.extend(r.metrics.iter().map(|v| v.to_string()));
            fields.push(format!("{:.3}", r.seconds));
            let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
            csv_export::write_record(out, &refs)?;
        }
        Ok(())
    })?;
    Ok(())
}

/// Loads a model file the train stage wrote; any other safetensors file (a backbone's
/// pretrained weights, another tool's model, a newer version's layout) is refused with
/// a message that says which.
pub fn load_model(path: &Path, device: Device) -> Result<(Learner<AnyModel>, ModelMeta)> {
    let (tensors, meta) = checkpoint::load(path)?;
    let meta = model_meta(path, meta)?;
    meta.task
        .check()
        .map_err(|e| anyhow::anyhow!("{}: its task: {e}", path.display()))?;
    let (learner, _) = build_learner(&meta.arch, meta.task.clone(), meta.size, device)?;
    checkpoint::copy_into(&learner.vs, &tensors, path)?;
    Ok((learner, meta))
}

fn model_meta(path: &Path, json: serde_json::Value) -> Result<ModelMeta> {
    let is_ours = json
        .as_object()
        .is_some_and(|m| m.contains_key("arch") && m.contains_key("task"));
    if !is_ours {
        bail!(
            "{}: not a model of this project (its safetensors header has no lesson8 model \
             metadata: is it a backbone's pretrained weights or another tool's file?); use a \
             model a train stage wrote, e.g. runs/<dataset>/<pipeline>/models/*.safetensors",
            path.display()
        );
    }
    let format = json.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
    if format > u64::from(MODEL_FORMAT) {
        bail!(
            "{}: model layout {format} was written by a newer version of this project (this \
             build reads layout {MODEL_FORMAT} and older); update, or retrain with this build",
            path.display()
        );
    }
    let meta: ModelMeta = serde_json::from_value(json).with_context(|| {
        format!(
            "{}: its model metadata does not match this build's (layout {MODEL_FORMAT})",
            path.display()
        )
    })?;
    Ok(meta)
}

/// The detector's predictions: `predictions` gets one row per detection
/// (`fn,cat,score,bbox`, boxes in original image pixels, best score first per image),
/// `images` the validation images scored (`fn`), those without a detection included.
fn write_detector_predictions(
    spec: &StageSpec,
    data: &Prepared,
    predictions: &[crate::learner::Prediction],
    classes: &[String],
    size: u32,
) -> Result<()> {
    let out = spec.output("predictions")?;
    let images = spec.output("images")?;
    csv_export::create_parent(out)?;
    csv_export::create_parent(images)?;
    let file_name =
        |p: &crate::learner::Prediction| data.rows[data.val_rows[p.index]].file_name.as_str();
    let rows: Vec<DetectionRow> = predictions
        .iter()
        .flat_map(|p| {
            p.detections.iter().map(move |d| DetectionRow {
                file_name: file_name(p).to_owned(),
                class: classes[d.class].clone(),
                score: d.score,
                bbox: detection_in_original_pixels(d.bbox, p.orig_size, size),
            })
        })
        .collect();
    write_detections(out, &rows)?;
    let names: Vec<&str> = predictions.iter().map(file_name).collect();
    write_image_list(images, &names)?;
    Ok(())
}

/// Predictions over the validation split, boxes in original image pixels.
fn predict(spec: &StageSpec, params: &Params) -> Result<()> {
    let model_path = spec.input("model")?;
    let (mut learner, meta) = load_model(model_path, device())?;
    learner.progress = false;
    let task_kind = meta.task.kind();
    if task_kind != params.task {
        bail!(
            "{}: the model was trained for {:?}, the stage asks for {:?}",
            model_path.display(),
            task_kind,
            params.task
        );
    }
    let classes = meta.task.classes().map(<[String]>::to_vec);
    let mut params = params.clone();
    params.size = meta.size;
    let data = prepare(
        spec,
        &params,
        meta.normalisation,
        classes,
        meta.val_fraction,
        meta.seed,
    )?;
    // With TTA, the plain pass is scored too, so the summary gives both figures.
    let plain = if params.tta {
        Some(learner.predict(&data.valid, false)?.1)
    } else {
        None
    };
    let (predictions, val) = learner.predict(&data.valid, params.tta)?;
    if let Task::Ssd { classes, .. } = &meta.task {
        write_detector_predictions(spec, &data, &predictions, classes, meta.size)?;
        let figures: Vec<String> = meta
            .task
            .metric_names()
            .iter()
            .zip(val.values(&meta.task))
            .map(|(name, v)| format!("{name} {v:.4}"))
            .collect();
        println!(
            "{}: {} validation images, {} detections, val_loss {:.4}, {} (input pixels, difficult objects not ignored; the evaluate stage scores VOC's way)",
            spec.name,
            predictions.len(),
            val.detections.len(),
            val.loss(),
            figures.join(", ")
        );
        return note_unreadable(spec, &data);
    }
    let out = spec.output("predictions")?;
    csv_export::create_parent(out)?;
    let mut orig_iou_sum = 0.0f64;
    let task_classes = meta.task.classes();
    csv_export::write_atomic(out, |w| {
        // Columns per part of the task: classes, then boxes (in original pixels).
        let mut header = vec!["fn"];
        if task_classes.is_some() {
            header.extend(["cat", "true_cat", "prob"]);
        }
        if meta.task.has_boxes() {
            header.extend(["bbox", "true_bbox", "iou"]);
        }
        csv_export::write_record(w, &header)?;
        for p in &predictions {
            let row = &data.rows[data.val_rows[p.index]];
            let mut fields = vec![row.file_name.clone()];
            if let (Some((class, prob)), Some(classes)) = (p.class, task_classes) {
                fields.push(classes[class].clone());
                fields.push(row.category.clone().unwrap_or_default());
                fields.push(format!("{prob:.6}"));
            }
            if let (Some(bbox), Some(truth)) = (p.bbox, row.bbox) {
                let orig = unsquash_box(bbox, p.orig_size, meta.size);
                let overlap = iou(orig, truth);
                orig_iou_sum += overlap as f64;
                fields.push(csv_export::format_bbox(&orig));
                fields.push(csv_export::format_bbox(&truth));
                fields.push(format!("{overlap:.4}"));
            }
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            csv_export::write_record(w, &fields)?;
        }
        Ok(())
    })?;
    let figures = |sums: &crate::task::MetricSums| {
        let mut text = format!("val_loss {:.4}", sums.loss());
        for (name, v) in meta.task.metric_names().iter().zip(sums.values(&meta.task)) {
            text.push_str(&format!(", {name} {v:.4}"));
        }
        text
    };
    let mut summary = format!(
        "{}: {} validation images, {}",
        spec.name,
        predictions.len(),
        figures(&val)
    );
    if let Some(plain) = &plain {
        summary = format!("{summary} with flip TTA ({} without)", figures(plain));
    }
    if meta.task.has_boxes() {
        summary.push_str(&format!(
            ", mean IoU in original pixels {:.4}",
            orig_iou_sum / predictions.len().max(1) as f64
        ));
    }
    println!("{summary}");
    note_unreadable(spec, &data)
}
