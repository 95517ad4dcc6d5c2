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
    EpochEnd, EpochRecord, FitConfig, FitPosition, FitResume, Learner, LrFindResult, Prediction,
};
use crate::model::{LayeredModel, TinyCnn};
use crate::optim::{Method, OptimiserConfig};
use crate::task::{detection_in_original_pixels, iou, unsquash_box, Task};
use crate::tta::{AugmentedCopies, Tta};
use crate::TrainError;
use anyhow::{bail, Context, Result};
use augment::Normalisation;
use csv_export::{BboxPrediction, ClassPrediction, CombinedPrediction, ValidationPredictions};
use model_zoo::ssd_grid_sides;
use multibox::detections::{write_detections, write_image_list, DetectionRow};
use pipeline::params::{
    Backbone, FitStep, LrFindStep, OptimiserName, SsdFeatures, Step, TaskKind,
    TrainParams as Params,
};
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
    /// The body; the head follows from `task`, so it is not stored.
    pub arch: Backbone,
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

/// The zoo's network for a backbone; `None` for the test network, which the
/// trainer builds itself.
fn zoo_arch(backbone: Backbone) -> Option<model_zoo::Arch> {
    match backbone {
        Backbone::ResNet34 => Some(model_zoo::Arch::ResNet34),
        Backbone::EfficientNetLite0 => Some(model_zoo::Arch::EfficientNetLite0),
        Backbone::EfficientNetLite1 => Some(model_zoo::Arch::EfficientNetLite1),
        Backbone::EfficientNetLite2 => Some(model_zoo::Arch::EfficientNetLite2),
        Backbone::TinyCnn => None,
    }
}

/// The input normalisation the backbone's pretrained weights expect (ImageNet's for
/// the test network, which has none).
fn backbone_normalisation(backbone: Backbone) -> Normalisation {
    match zoo_arch(backbone) {
        Some(arch) => {
            let (mean, std) = arch.input_normalization();
            Normalisation { mean, std }
        }
        None => Normalisation::IMAGENET,
    }
}

/// Width of the combined model's hidden layer (the next lesson's 256).
const COMBINED_HIDDEN: i64 = 256;

/// How the pretrained body behaves while its groups train (the params of the same
/// names); the defaults are the reference implementation's.
#[derive(Debug, Clone, Copy, Default)]
struct BodyTraining {
    /// Stochastic depth's largest rate; the backbone's own when `None`.
    drop_connect: Option<f64>,
    /// BatchNorm keeps its running statistics (fastai's `bn_freeze`).
    bn_freeze: bool,
}

impl BodyTraining {
    fn of(params: &Params) -> BodyTraining {
        BodyTraining {
            drop_connect: params.drop_connect,
            bn_freeze: params.bn_freeze,
        }
    }
}

/// Builds the network for `backbone` with the task's head on `device`.
fn build_learner(
    backbone: Backbone,
    task: Task,
    size: u32,
    body: BodyTraining,
    device: Device,
) -> Result<Learner<AnyModel>> {
    let vs = nn::VarStore::new(device);
    let model = match zoo_arch(backbone) {
        None => {
            if matches!(task, Task::Ssd { .. }) {
                bail!(
                    "the tiny-cnn test network has no detector head; use an efficientnet-lite backbone"
                );
            }
            AnyModel::Tiny(TinyCnn::new(&vs.root(), task.outputs()))
        }
        Some(zoo_arch) => {
            let spec = match &task {
                Task::Classify { classes } => model_zoo::HeadSpec::Classifier {
                    classes: classes.len() as i64,
                },
                Task::Bbox => model_zoo::HeadSpec::FlattenLinear { outputs: 4 },
                Task::Combined { .. } => model_zoo::HeadSpec::FlattenMlp {
                    hidden: COMBINED_HIDDEN,
                    outputs: task.outputs(),
                },
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
                        "ssd.anchors.grids = {wanted:?}, but on {backbone}'s {feature_side}x{feature_side} \
                         feature map at {size} px the head's grids are {plain:?} (stride-2 \
                         convolutions), optionally after the map's own {feature_side}; set grids \
                         to {plain:?} (or change size)"
                    );
                    }
                    model_zoo::HeadSpec::Ssd {
                        feature_map: match params.features {
                            SsdFeatures::Last => model_zoo::FeatureMap::Last,
                            SsdFeatures::WithStride16 => model_zoo::FeatureMap::WithStride16,
                        },
                        feature_grid,
                        grids,
                        anchors_per_cell: anchors.anchors_per_cell() as i64,
                        classes: classes.len() as i64,
                        dropout: params.dropout,
                    }
                }
            };
            let mut net = model_zoo::Net::new(&vs.root(), zoo_arch, spec, size as i64);
            if let Some(rate) = body.drop_connect {
                net.set_drop_connect(rate);
            }
            net.set_bn_freeze(body.bn_freeze);
            AnyModel::Zoo(net)
        }
    };
    Ok(Learner::new(vs, model, task, size as usize))
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
                    moves: b.moves,
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
    /// The validation images with the training augmentation, for test-time
    /// augmentation's copies (`tta_augmented`), in the same order as `valid`.
    valid_augmented: Option<LoaderSource>,
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
    let val_items: Vec<_> = val_rows.iter().map(|&i| items[i].clone()).collect();
    let train = LoaderSource::new(
        train_items,
        augment::LoaderConfig {
            drop_last,
            ..base.clone()
        },
    );
    let valid_augmented = (params.tta_augmented > 0).then(|| {
        LoaderSource::new(
            val_items.clone(),
            augment::LoaderConfig {
                shuffle: false,
                ..base.clone()
            },
        )
    });
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
        valid_augmented,
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
    let normalisation = backbone_normalisation(params.backbone);
    let data = prepare(
        spec,
        params,
        normalisation,
        None,
        params.val_fraction,
        params.seed,
    )?;
    let mut learner = pretrained_learner(spec, params, &data)?;
    let meta = ModelMeta {
        format: MODEL_FORMAT,
        normalisation,
        arch: params.backbone,
        task: data.task.clone(),
        size: params.size,
        val_fraction: params.val_fraction,
        seed: params.seed,
        metrics: Vec::new(),
        resume: None,
    };
    let mut checkpointer = Checkpointer {
        path: checkpoint_path(spec),
        run_key: run_key(spec),
        metrics: (!lr_find_kind)
            .then(|| spec.output("metrics").map(Path::to_path_buf))
            .transpose()?,
        meta,
    };
    let mut resume_from = if resume {
        checkpointer.resume_point(&learner)?
    } else {
        None
    };

    // The lesson's calls on its learner, in order; those a resumed run already
    // made are replayed (freezing) or skipped (fits, lr_find).
    let mut epochs_done = 0usize;
    let mut lr_finds = 0usize;
    for (step_index, step) in schedule(params, lr_find_kind).iter().enumerate() {
        let done_before = resume_from
            .as_ref()
            .is_some_and(|r| step_index < r.point.step);
        match step {
            Step::FreezeTo(n) => learner.freeze_to(*n),
            Step::Unfreeze(_) => learner.unfreeze(),
            Step::LrFind(_) if done_before => lr_finds += 1,
            Step::LrFind(range) => {
                // The lr_find kind's first search is its output; any other is kept for a look.
                let output = lr_find_kind && lr_finds == 0;
                lr_find(
                    spec,
                    &mut learner,
                    &data,
                    range,
                    epochs_done,
                    step_index,
                    output,
                )?;
                lr_finds += 1;
            }
            Step::Fit(fit) => {
                let config = fit_config(fit)?;
                if done_before {
                    epochs_done += config.epochs();
                    continue;
                }
                let resume = resume_from
                    .take_if(|r| r.point.step == step_index)
                    .map(|r| {
                        epochs_done = r.point.epochs_done - r.point.fit.epochs_done;
                        FitResume {
                            position: r.point.fit,
                            optimiser_tensors: r.tensors,
                        }
                    });
                let first_epoch = epochs_done;
                let mut on_epoch_end = |end: EpochEnd<'_>| -> Result<(), TrainError> {
                    let run_epochs_done = checkpointer.save(step_index, first_epoch, end)?;
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
        let meta = ModelMeta {
            resume: None,
            ..checkpointer.meta
        };
        let tensors: Vec<(String, Tensor)> = learner.vs.variables().into_iter().collect();
        checkpoint::save(spec.output("model")?, &tensors, &meta)?;
        write_metrics(spec.output("metrics")?, &meta.task, &meta.metrics)?;
    }
    note_unreadable(spec, &data)
}

/// One `learn.lr_find()`: the curve and the suggestion into the stage's
/// outputs (`output`), or into its work folder.
fn lr_find(
    spec: &StageSpec,
    learner: &mut Learner<AnyModel>,
    data: &Prepared,
    range: &LrFindStep,
    epochs_done: usize,
    step_index: usize,
    output: bool,
) -> Result<()> {
    let found = learner.lr_find(&data.train, &[range.start], range.end, epochs_done)?;
    let (curve, json) = if output {
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
    Ok(())
}

/// The params' schedule; the lr_find kind searches (its `lr_find` range, or
/// the default) after the schedule's steps when the schedule has no search.
fn schedule(params: &Params, lr_find_kind: bool) -> Vec<Step> {
    let mut schedule = params.schedule.clone();
    if lr_find_kind && !schedule.iter().any(|s| matches!(s, Step::LrFind(_))) {
        schedule.push(Step::LrFind(params.lr_find.clone().unwrap_or_default()));
    }
    schedule
}

/// The lesson's `ConvLearner.pretrained`: the network for the task, the
/// optimiser, the body's ImageNet weights and the body frozen (everything
/// trainable and from its initialisation under `random_init`).
fn pretrained_learner(
    spec: &StageSpec,
    params: &Params,
    data: &Prepared,
) -> Result<Learner<AnyModel>> {
    let device = device();
    // Seeds the initialisation of the head (and of everything under random_init).
    tch::manual_seed(params.seed as i64);
    let mut learner = build_learner(
        params.backbone,
        data.task.clone(),
        params.size,
        BodyTraining::of(params),
        device,
    )?;
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
    learner.label_smoothing = params.label_smoothing;
    match (spec.inputs.get("weights"), params.random_init) {
        (_, true) => {
            tracing::info!("random_init: every layer starts from its initialisation, all groups trainable");
        }
        (Some(weights), false) => {
            let Some(arch) = zoo_arch(params.backbone) else {
                bail!(
                    "stage {}: {} has no pretrained weights; set random_init = true",
                    spec.name,
                    params.backbone
                );
            };
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
    Ok(learner)
}

/// Where an interrupted run of the same params and inputs stands: the
/// schedule step, the fit's position and the optimiser's buffers.
struct ResumeFrom {
    point: ResumePoint,
    tensors: HashMap<String, Tensor>,
}

/// Writes the checkpoint (weights, optimiser state, metadata with the
/// position) and the metrics CSV after every epoch, and finds them again on
/// resume.
struct Checkpointer {
    path: PathBuf,
    /// Identifies the run: a checkpoint with another key is not resumed.
    run_key: String,
    /// The train kind's per-epoch metrics CSV (none for lr_find).
    metrics: Option<PathBuf>,
    meta: ModelMeta,
}

impl Checkpointer {
    /// Loads this run's checkpoint into the learner, if there is one; a
    /// checkpoint of another run is ignored with a warning.
    fn resume_point(&mut self, learner: &Learner<AnyModel>) -> Result<Option<ResumeFrom>> {
        if !self.path.exists() {
            return Ok(None);
        }
        let (tensors, saved) = checkpoint::load(&self.path)?;
        let saved: ModelMeta = serde_json::from_value(saved)
            .with_context(|| format!("{}: bad metadata", self.path.display()))?;
        match saved.resume {
            Some(point) if point.run_key == self.run_key => {
                checkpoint::copy_into(&learner.vs, &tensors, &self.path)?;
                eprintln!(
                    "resuming from {} after {} epochs",
                    self.path.display(),
                    point.epochs_done
                );
                self.meta.metrics = saved.metrics;
                Ok(Some(ResumeFrom { point, tensors }))
            }
            _ => {
                tracing::warn!(
                    "{}: a checkpoint of another run (params or inputs differ); starting afresh",
                    self.path.display()
                );
                Ok(None)
            }
        }
    }

    /// Saves after an epoch of the fit at schedule step `step` that started at
    /// the run's epoch `first_epoch`; returns the run's epochs done.
    fn save(
        &mut self,
        step: usize,
        first_epoch: usize,
        end: EpochEnd<'_>,
    ) -> Result<usize, TrainError> {
        self.meta.metrics.push(end.record.clone());
        let epochs_done = first_epoch + end.position.epochs_done;
        self.meta.resume = Some(ResumePoint {
            run_key: self.run_key.clone(),
            step,
            epochs_done,
            fit: end.position.clone(),
        });
        let mut tensors: Vec<(String, Tensor)> = end.vs.variables().into_iter().collect();
        tensors.extend(end.optimiser.state_tensors());
        checkpoint::save(&self.path, &tensors, &self.meta)?;
        if let Some(path) = &self.metrics {
            write_metrics(path, &self.meta.task, &self.meta.metrics).map_err(|source| {
                TrainError::Metrics {
                    path: path.clone(),
                    source,
                }
            })?;
        }
        Ok(epochs_done)
    }
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

fn write_lr_find(curve: &Path, json: &Path, found: &LrFindResult) -> std::io::Result<()> {
    let points: Vec<csv_export::LrFindPoint> = found
        .points
        .iter()
        .map(|p| csv_export::LrFindPoint {
            iteration: p.iteration as u64,
            lr: p.lr,
            loss: p.loss,
            smooth_loss: p.smooth_loss,
        })
        .collect();
    csv_export::write_lr_find(curve, &points)?;
    csv_export::LrSuggestion {
        suggested_lr: found.suggested_lr,
        min_loss_lr: found.min_loss_lr,
    }
    .write(json)
}

/// The metrics CSV: `epoch,trn_loss,val_loss,<metrics...>,seconds`. Epochs
/// resumed from a checkpoint of a trainer with fewer metric columns (the
/// detector's loss parts came later) get NaN in the columns they lack, so
/// every row has every column.
pub fn write_metrics(path: &Path, task: &Task, records: &[EpochRecord]) -> std::io::Result<()> {
    let names = task.metric_names();
    let epochs: Vec<csv_export::EpochMetrics> = records
        .iter()
        .map(|r| {
            let mut metrics = r.metrics.clone();
            metrics.resize(names.len(), f64::NAN);
            csv_export::EpochMetrics {
                epoch: r.epoch,
                trn_loss: r.trn_loss,
                val_loss: r.val_loss,
                metrics,
                seconds: r.seconds,
            }
        })
        .collect();
    csv_export::write_metrics(path, names, &epochs)
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
    // For evaluation: how the body would train does not matter.
    let body = BodyTraining::default();
    let learner = build_learner(meta.arch, meta.task.clone(), meta.size, body, device)?;
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
    predictions: &[Prediction],
    classes: &[String],
    size: u32,
) -> Result<()> {
    let out = spec.output("predictions")?;
    let images = spec.output("images")?;
    let file_name = |p: &Prediction| data.rows[data.val_rows[p.index]].file_name.as_str();
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

/// The validation predictions as the task's CSV rows: classes with their
/// truth and probability, boxes in original pixels with their truth and IoU.
/// `None` for the detector, whose rows are objects ([`write_detector_predictions`]).
fn validation_rows(
    data: &Prepared,
    predictions: &[Prediction],
    meta: &ModelMeta,
) -> Option<ValidationPredictions> {
    let row = |p: &Prediction| &data.rows[data.val_rows[p.index]];
    let class = |p: &Prediction| {
        let (class, prob) = p.class.expect("a class for a task with classes");
        let classes = meta.task.classes().expect("a task with classes");
        let truth = row(p).category.clone().unwrap_or_default();
        (classes[class].clone(), truth, prob)
    };
    let bbox = |p: &Prediction| {
        let orig = unsquash_box(
            p.bbox.expect("a box for a task with boxes"),
            p.orig_size,
            meta.size,
        );
        let truth = row(p).bbox.expect("a true box for a task with boxes");
        (orig, truth, iou(orig, truth))
    };
    Some(match &meta.task {
        Task::Classify { .. } => ValidationPredictions::Classes(
            predictions
                .iter()
                .map(|p| {
                    let (category, true_category, prob) = class(p);
                    ClassPrediction {
                        file_name: row(p).file_name.clone(),
                        category,
                        true_category,
                        prob,
                    }
                })
                .collect(),
        ),
        Task::Bbox => ValidationPredictions::Boxes(
            predictions
                .iter()
                .map(|p| {
                    let (bbox, true_bbox, iou) = bbox(p);
                    BboxPrediction {
                        file_name: row(p).file_name.clone(),
                        bbox,
                        true_bbox,
                        iou,
                    }
                })
                .collect(),
        ),
        Task::Combined { .. } => ValidationPredictions::Combined(
            predictions
                .iter()
                .map(|p| {
                    let (category, true_category, prob) = class(p);
                    let (bbox, true_bbox, iou) = bbox(p);
                    CombinedPrediction {
                        file_name: row(p).file_name.clone(),
                        category,
                        true_category,
                        prob,
                        bbox,
                        true_bbox,
                        iou,
                    }
                })
                .collect(),
        ),
        Task::Ssd { .. } => return None,
    })
}

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
    let tta = Tta {
        flip: params.tta,
        augmented: data.valid_augmented.as_ref().map(|source| AugmentedCopies {
            source,
            copies: params.tta_augmented,
        }),
    };
    // With TTA, the plain pass is scored too, so the summary gives both figures.
    let plain = if tta.is_on() {
        Some(learner.predict(&data.valid, Tta::NONE)?.1)
    } else {
        None
    };
    let (predictions, val) = learner.predict(&data.valid, tta)?;
    let metric_figures = |sums: &crate::task::MetricSums| {
        let values = meta.task.metric_names().iter().zip(sums.values(&meta.task));
        let named: Vec<String> = values.map(|(name, v)| format!("{name} {v:.4}")).collect();
        named.join(", ")
    };
    let Some(rows) = validation_rows(&data, &predictions, &meta) else {
        // The detector: every object, in its own CSVs (scored by the evaluate stage).
        let classes = meta.task.classes().unwrap_or_default();
        write_detector_predictions(spec, &data, &predictions, classes, meta.size)?;
        let without = plain
            .as_ref()
            .map(|plain| {
                format!(
                    " with {} ({} without)",
                    tta.describe(),
                    metric_figures(plain)
                )
            })
            .unwrap_or_default();
        println!(
            "{}: {} validation images, {} detections, val_loss {:.4}, {}{without} (input pixels, difficult objects not ignored; the evaluate stage scores VOC's way)",
            spec.name,
            predictions.len(),
            val.detections.len(),
            val.loss(),
            metric_figures(&val)
        );
        return note_unreadable(spec, &data);
    };
    rows.write(spec.output("predictions")?)?;
    let orig_ious: Vec<f32> = match &rows {
        ValidationPredictions::Classes(_) => Vec::new(),
        ValidationPredictions::Boxes(rows) => rows.iter().map(|r| r.iou).collect(),
        ValidationPredictions::Combined(rows) => rows.iter().map(|r| r.iou).collect(),
    };
    let orig_iou_sum: f64 = orig_ious.iter().map(|&v| v as f64).sum();
    let figures = |sums: &crate::task::MetricSums| {
        format!("val_loss {:.4}, {}", sums.loss(), metric_figures(sums))
    };
    let mut summary = format!(
        "{}: {} validation images, {}",
        spec.name,
        predictions.len(),
        figures(&val)
    );
    if let Some(plain) = &plain {
        summary = format!(
            "{summary} with {} ({} without)",
            tta.describe(),
            figures(plain)
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_of_a_trainer_with_fewer_metrics_get_nan_in_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("metrics.csv");
        let record = |epoch, metrics: Vec<f64>| EpochRecord {
            epoch,
            trn_loss: 2.0,
            val_loss: 1.0,
            metrics,
            seconds: 3.0,
        };
        // Epoch 0 as an older trainer recorded it (one metric), epoch 1 in full.
        let records = [record(0, vec![20.0]), record(1, vec![19.0, 0.5, 0.6])];
        write_metrics(&path, &Task::Bbox, &records).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split(',').collect()).collect();
        assert_eq!(
            rows[0],
            ["epoch", "trn_loss", "val_loss", "l1_px", "mean_iou", "iou50", "seconds"]
        );
        assert_eq!(rows[1], ["0", "2", "1", "20", "NaN", "NaN", "3.000"]);
        assert_eq!(rows[2], ["1", "2", "1", "19", "0.5", "0.6", "3.000"]);
    }
}
