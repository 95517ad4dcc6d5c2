//! A GIL-free, multi-threaded image loader for the lesson's bounding-box task.
//!
//! Each image is decoded (JPEG through zune-jpeg, photos much larger than the
//! target at 1/2..1/8 through jpeg-decoder's reduced inverse DCT, PNG through
//! the `image` crate), squashed to `size x size` without cropping, augmented
//! together with its box and its objects' boxes (the lesson's
//! `transforms_side_on`: rotate, lighting, flip) and written as ImageNet-normalised
//! f32 in NCHW layout straight into the batch buffer.
//!
//! ```no_run
//! use std::sync::Arc;
//! use augment::{AugmentParams, Item, Loader, LoaderConfig, Object};
//! let items = Arc::new(vec![Item {
//!     path: "a.jpg".into(),
//!     class: Some(3),
//!     bbox: Some([10., 20., 200., 300.]),
//!     objects: vec![
//!         Object { bbox: [10., 20., 200., 300.], class: 3 },
//!         Object { bbox: [5., 5., 40., 60.], class: 7 },
//!     ],
//! }]);
//! let cfg = LoaderConfig { augment: Some(AugmentParams::default()), ..LoaderConfig::default() };
//! let loader = Loader::new(items, cfg);
//! for batch in loader.epoch(0) {
//!     let batch = batch?;
//!     assert_eq!(batch.x.len(), batch.n * 3 * 224 * 224);
//!     assert_eq!(batch.objects.len(), batch.n);
//! }
//! # Ok::<(), augment::LoadError>(())
//! ```

mod decode;
mod loader;
mod transform;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use decode::{
    check_claimed_size, decode_squashed, decode_with_image_crate, decoder_panic_as_error,
    read_image_size, squash_box, DecodedDims, JpegDecoder, JpegScale, Squashed, Squasher,
};
pub use loader::{EpochIter, Loader};
pub use transform::{
    augment_one, box_after_affine, box_before_affine, denorm, hflip_into, lighting,
    lighting_contrast_factor, mask_box_after_affine, move_box, move_objects, normalize_into,
    warp_affine_reflect, Affine, AugmentDraw, MovedBox, IMAGENET_MEAN, IMAGENET_STD,
};

/// One image of a data set. `bbox` is `[top, left, bottom, right]` in the
/// ORIGINAL image's inclusive pixel coordinates.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Item {
    pub path: PathBuf,
    pub class: Option<i64>,
    pub bbox: Option<[f32; 4]>,
    /// Every object of the image (the multi-object detector's targets), each
    /// box moved with the image exactly as `bbox` is; may be empty.
    pub objects: Vec<Object>,
}

/// One object of an image: its box, in the same convention as [`Item::bbox`]
/// (`[top, left, bottom, right]`, inclusive pixels), and its class index.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Object {
    pub bbox: [f32; 4],
    pub class: i64,
}

/// How a box follows the image through rotation and flip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BoxMode {
    /// The tight box around the four transformed corners, clamped to the image.
    #[default]
    Tight,
    /// The lesson's way (fastai 0.7 `TfmType.COORD`): rasterise the box as a
    /// mask, transform the mask, take the bounding box of pixels > 0.5.
    Mask,
}

/// The lesson's side-on augmentations; the serde defaults are the lesson's
/// values so a pipeline TOML table deserialises into it.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentParams {
    /// Maximum rotation in degrees; the angle is uniform in +/- this.
    pub rotate_deg: f32,
    /// Probability that an image is rotated at all.
    pub rotate_p: f32,
    /// Brightness shift b is uniform in +/- this.
    pub lighting_b: f32,
    /// Contrast parameter c is uniform in +/- this.
    pub lighting_c: f32,
    /// Probability of a horizontal flip.
    pub flip_p: f32,
    /// fastai 0.7's `max_zoom` (RandomScale then RandomCrop back to the
    /// size): after rotation and flip, the image is magnified by a factor
    /// uniform in `1..max_zoom` about a random point, so a random window of
    /// `1/zoom` of each side fills the picture. 1 (the default, as the
    /// lesson's detectors) never zooms.
    pub max_zoom: f32,
    pub box_mode: BoxMode,
    /// An object keeping less than this fraction of its box's area inside the
    /// augmented image is dropped from [`Batch::objects`] ([`MovedBox::visible`];
    /// 0 keeps every object). Validation (no augmentation) keeps every object.
    pub min_visible: f32,
}

impl AugmentParams {
    /// What serde cannot say: probabilities in `0..=1`, ranges and the zoom
    /// finite, the zoom at least 1 (a window larger than the image would
    /// show reflected borders as content).
    pub fn check(&self) -> Result<(), String> {
        for (name, p) in [
            ("rotate_p", self.rotate_p),
            ("flip_p", self.flip_p),
            ("min_visible", self.min_visible),
        ] {
            if !(0.0..=1.0).contains(&p) {
                return Err(format!("augment.{name} must be between 0 and 1, not {p}"));
            }
        }
        for (name, v) in [
            ("rotate_deg", self.rotate_deg),
            ("lighting_b", self.lighting_b),
            ("lighting_c", self.lighting_c),
        ] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("augment.{name} must be a number >= 0, not {v}"));
            }
        }
        if !(self.max_zoom.is_finite() && self.max_zoom >= 1.0) {
            return Err(format!(
                "augment.max_zoom must be a number >= 1 (1: no zoom), not {}",
                self.max_zoom
            ));
        }
        Ok(())
    }
}

impl Default for AugmentParams {
    fn default() -> Self {
        Self {
            rotate_deg: 10.0,
            rotate_p: 0.75,
            lighting_b: 0.05,
            lighting_c: 0.05,
            flip_p: 0.5,
            max_zoom: 1.0,
            box_mode: BoxMode::Tight,
            min_visible: 0.25,
        }
    }
}

/// How pixel values (RGB in 0..1) are normalised for the network: `(x - mean) / std`
/// per channel. Each pretrained backbone expects its own (model-zoo's
/// `Arch::input_normalization`); a model file records the one it was trained with.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Normalisation {
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

impl Normalisation {
    /// ImageNet's statistics (torchvision's models).
    pub const IMAGENET: Normalisation = Normalisation {
        mean: IMAGENET_MEAN,
        std: IMAGENET_STD,
    };
}

impl Default for Normalisation {
    fn default() -> Self {
        Normalisation::IMAGENET
    }
}

/// Which way up an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Orientation {
    /// The pixels as stored, whatever the file's EXIF says: the frame that dataset
    /// annotations (VOC, COCO) give their boxes in.
    #[default]
    AsStored,
    /// As a photo viewer shows the image: EXIF orientation applied (a user's own photos).
    /// Sizes and boxes are then those of the viewed image.
    Exif,
}

/// What the loader does with an image it cannot read or decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadImage {
    /// The epoch ends with a [`LoadError`] naming the file, in batch order.
    #[default]
    Fail,
    /// Leave the image out of its batch, count it and report it at epoch end
    /// ([`EpochIter::skipped`] and a `warn!`).
    Skip,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoaderConfig {
    /// Output side in pixels: images are squashed to `size x size`.
    pub size: u32,
    pub batch_size: usize,
    /// Worker threads (at least one is used).
    pub workers: usize,
    /// Finished batches that may wait in the queue beyond those being built.
    pub prefetch: usize,
    pub shuffle: bool,
    /// With `epoch`, determines the order and every random draw, whatever `workers` is.
    pub seed: u64,
    /// `None` for validation: squash and normalise only.
    pub augment: Option<AugmentParams>,
    /// Drop the last batch when it is smaller than `batch_size`.
    pub drop_last: bool,
    pub on_bad_image: BadImage,
    pub normalisation: Normalisation,
    pub orientation: Orientation,
}

impl Default for LoaderConfig {
    fn default() -> Self {
        Self {
            size: 224,
            batch_size: 64,
            workers: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            prefetch: 2,
            shuffle: true,
            seed: 0,
            augment: None,
            drop_last: false,
            on_bad_image: BadImage::Fail,
            normalisation: Normalisation::IMAGENET,
            orientation: Orientation::AsStored,
        }
    }
}

/// One batch, ready to wrap as a tensor of shape `[n, 3, size, size]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Batch {
    /// `n * 3 * size * size` values, NCHW, ImageNet mean/std normalised.
    pub x: Vec<f32>,
    pub n: usize,
    pub size: u32,
    /// One class per image when every item of the loader has a class, else empty.
    pub classes: Vec<i64>,
    /// One box per image (`[top, left, bottom, right]` in `size x size` pixel
    /// coordinates after augmentation) when every item has a box, else empty.
    pub boxes: Vec<[f32; 4]>,
    /// The objects of each image (one list per image, possibly empty), boxes
    /// in `size x size` pixel coordinates after augmentation like `boxes`,
    /// clipped to the image; an object mostly moved out of the image is left
    /// out ([`AugmentParams::min_visible`]).
    pub objects: Vec<Vec<Object>>,
    /// How many objects of the batch's images were left out that way.
    pub dropped_objects: usize,
    /// Index into the loader's items of each image.
    pub indices: Vec<usize>,
    /// `(height, width)` of each original image.
    pub orig_sizes: Vec<(u32, u32)>,
    /// The geometric map each image's pixels went through, in `size x size`
    /// pixels ([`AugmentDraw::geometry`]; `None` where they did not move): how a
    /// box predicted on the image maps back to it ([`box_before_affine`]).
    pub moves: Vec<Option<Affine>>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read image {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decode image {}: {reason}", path.display())]
    Decode { path: PathBuf, reason: String },
    #[error("cannot start an image decoder: {reason}")]
    Init { reason: String },
    #[error("a loader worker panicked while building batch {batch}: {message}")]
    WorkerPanicked { batch: usize, message: String },
}

impl LoadError {
    /// The file the error is about, if any.
    pub fn path(&self) -> Option<&std::path::Path> {
        match self {
            LoadError::Io { path, .. } | LoadError::Decode { path, .. } => Some(path),
            LoadError::Init { .. } | LoadError::WorkerPanicked { .. } => None,
        }
    }
}
