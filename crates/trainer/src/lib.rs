//! trainer: the lesson's (fastai 0.7) `Learner` over tch, and the training stages.
//!
//! - [`schedule`]: SGDR cosine annealing, circular LR and the LR finder's rates, in
//!   closed form with fastai 0.7's exact semantics (warm-up, restarts, cycle growth).
//! - [`optim`]: Adam and SGD with momentum (PyTorch's updates, optional L2 weight
//!   decay) with one rate per layer group and checkpointable state.
//! - [`learner`]: `lr_find`, `fit`, `freeze_to`/`unfreeze`, validation and prediction.
//! - [`checkpoint`]: safetensors with JSON metadata, written atomically.
//! - [`stage`]: the `trainer stage --spec` runner (lr_find, train, predict).
//! - [`infer`]: predictions on a user's own images (`trainer predict`).
//! - [`tta`]: test-time augmentation, predictions averaged over views of each image.

pub mod checkpoint;
pub mod data;
pub mod infer;
pub mod learner;
pub mod model;
pub mod optim;
pub mod schedule;
pub mod ssd;
pub mod stage;
pub mod task;
pub mod tta;

pub use data::{cv_indices, Batch, DataSource, InMemorySource};
pub use learner::{
    EpochEnd, EpochRecord, FitConfig, FitPosition, FitResume, Learner, LrFindResult, LrPoint,
    Prediction,
};
pub use model::{LayeredModel, TinyCnn};
pub use optim::{Method, Optimiser, OptimiserConfig, Param};
pub use schedule::{Schedule, SmoothedLoss};
pub use task::{iou, Task};
pub use tta::{AugmentedCopies, Tta};

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("torch: {0}")]
    Torch(#[from] tch::TchError),
    /// Saving: a tensor of a kind safetensors files do not hold.
    #[error("checkpoint: tensor `{name}` has kind {kind}, which checkpoints do not store")]
    TensorKind { name: String, kind: String },
    /// Loading: a tensor of a dtype torch here does not take.
    #[error("checkpoint {}: tensor `{name}` has unsupported dtype {dtype}", path.display())]
    TensorDtype {
        path: PathBuf,
        name: String,
        dtype: String,
    },
    /// Loading into a model: a variable the file lacks.
    #[error("{}: variable `{name}` missing", path.display())]
    MissingVariable { path: PathBuf, name: String },
    /// Loading into a model: a variable of another shape (another task or size).
    #[error("{}: variable `{name}` has shape {saved:?}, the model expects {expected:?}", path.display())]
    VariableShape {
        path: PathBuf,
        name: String,
        saved: Vec<i64>,
        expected: Vec<i64>,
    },
    /// Resuming: the checkpoint's optimiser buffers do not fit the optimiser.
    #[error("checkpoint: {0}")]
    OptimiserState(#[from] optim::StateError),
    /// The file is not safetensors, or its tensors cannot be read.
    #[error("checkpoint {}: {source}", path.display())]
    Safetensors {
        path: PathBuf,
        #[source]
        source: safetensors::SafeTensorError,
    },
    /// The metadata JSON of a model or checkpoint file.
    #[error("checkpoint {}: metadata: {source}", path.display())]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The loader could not build a batch (an unreadable image under `on_bad_image = "fail"`).
    #[error("data: {0}")]
    Load(#[from] augment::LoadError),
    /// The detector's output could not be decoded into boxes.
    #[error("detections: {0}")]
    Decode(#[from] multibox::nms::DecodeError),
    /// The per-epoch metrics CSV beside a checkpoint.
    #[error("writing the metrics {}: {source}", path.display())]
    Metrics {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{given} learning rates given for a model with {groups} layer groups (give 1 or {groups})"
    )]
    LrCount { given: usize, groups: usize },
    #[error("lr_find: no batch gave a finite loss")]
    NoFiniteLoss,
    #[error("the training set yields no batches")]
    NoBatches,
    #[error(
        "test-time augmentation: augmented copy {copy} does not hold the images predicted on, \
         in their order"
    )]
    TtaCopyMisaligned { copy: usize },
    #[error(
        "test-time augmentation: augmented copies are not available for the detector \
         (its TTA is the mirror image: tta = true)"
    )]
    TtaAugmentedDetector,
    /// An epoch-end callback asked the fit to stop (tests that interrupt and resume).
    #[error("stopped by the caller after {epochs_done} epochs")]
    Stopped { epochs_done: usize },
    #[error(
        "training loss became {loss} at epoch {epoch}, batch {iteration} of the fit; stopped \
         (the last good checkpoint is kept; try a lower learning rate)"
    )]
    NonFiniteLoss {
        epoch: usize,
        iteration: usize,
        loss: f64,
    },
}

impl TrainError {
    pub fn io(path: &Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}
