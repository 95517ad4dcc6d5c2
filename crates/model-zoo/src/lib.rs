//! Pretrained CNN backbones and heads for the lesson's models, in `tch::nn`.
//!
//! Backbone variables carry exactly the names of the PyTorch state dicts they
//! come from (torchvision's ResNet34; the EfficientNet-Lite0/1/2 ports with
//! lukemelas/EfficientNet-PyTorch names), so [`load_backbone`] maps a
//! safetensors file one to one. Heads live under `head.` with fastai's
//! `nn.Sequential` indices.
//!
//! Each model has three layer groups (fastai's split): two body groups and
//! the head. Variables are created in the optimiser group of their layer group
//! (`nn::Path::set_group`), so `opt.set_lr_group(g, lr)` gives differential
//! learning rates, and [`Net::forward`] takes one train/eval flag per group so
//! frozen groups keep BatchNorm on its running statistics.
//!
//! The net must be built at `vs.root()` for [`load_backbone`] to find its
//! variables by their PyTorch names.

mod allocator;
mod efficientnet;
mod head;
mod load;
mod resnet;
mod ssd_head;
pub mod step_bench;

use std::str::FromStr;
use tch::{nn, Tensor};

pub use allocator::{configure_tensor_memory, keep_freed_tensor_memory, TensorMemory};
pub use efficientnet::DROP_CONNECT_RATE;
pub use head::HeadSpec;
pub use load::{load_backbone, LoadReport};
pub use ssd_head::{ssd_grid_sides, SsdHead, LESSON_SSD_DROPOUT, SSD_CHANNELS};

/// Number of layer groups of every model: body (early), body (late), head.
pub const N_GROUPS: usize = 3;
/// Index of the head's layer group.
pub const HEAD_GROUP: usize = 2;

#[derive(Debug, thiserror::Error)]
pub enum ModelZooError {
    #[error(
        "unknown architecture `{0}` (known: resnet34, efficientnet-lite0, efficientnet-lite1, efficientnet-lite2)"
    )]
    UnknownArch(String),
    #[error("{path}: {source}")]
    Read { path: String, source: tch::TchError },
    #[error("{path}: the weights do not fit {arch}: {details}")]
    Mismatch {
        path: String,
        arch: Arch,
        details: String,
    },
    #[error("{path}: copying `{name}`: {source}")]
    Copy {
        path: String,
        name: String,
        source: tch::TchError,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    ResNet34,
    EfficientNetLite0,
    EfficientNetLite1,
    EfficientNetLite2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::ResNet34 => "resnet34",
            Arch::EfficientNetLite0 => "efficientnet-lite0",
            Arch::EfficientNetLite1 => "efficientnet-lite1",
            Arch::EfficientNetLite2 => "efficientnet-lite2",
        }
    }

    /// The EfficientNet-Lite variant of the three Lite arches (None: ResNet34).
    fn lite_variant(self) -> Option<efficientnet::Variant> {
        match self {
            Arch::ResNet34 => None,
            Arch::EfficientNetLite0 => Some(efficientnet::Variant::Lite0),
            Arch::EfficientNetLite1 => Some(efficientnet::Variant::Lite1),
            Arch::EfficientNetLite2 => Some(efficientnet::Variant::Lite2),
        }
    }

    /// Channels of the body's last feature map (1280 for every Lite variant:
    /// their head width is not scaled).
    pub fn feature_channels(self) -> i64 {
        match self {
            Arch::ResNet34 => resnet::FEATURES,
            Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => {
                efficientnet::FEATURES
            }
        }
    }

    /// Channels of the body's stride-16 map (ResNet34's layer3, the
    /// EfficientNets' last stage before stride 32): 256, 112 for Lite0 and
    /// Lite1, 120 for Lite2.
    pub fn stride16_channels(self) -> i64 {
        match self.lite_variant() {
            None => resnet::STRIDE16_CHANNELS,
            Some(variant) => variant.stride16_channels(),
        }
    }

    /// Channels of the feature map a head gets: the last map's, plus the
    /// stride-16 map's folded 2x2 into channels ([`FeatureMap::WithStride16`]).
    pub fn head_channels(self, map: FeatureMap) -> i64 {
        match map {
            FeatureMap::Last => self.feature_channels(),
            FeatureMap::WithStride16 => self.feature_channels() + 4 * self.stride16_channels(),
        }
    }

    /// Height (= width) of the body's last feature map for a square input
    /// (7 for 224 on all; 8 for 240, 9 for 260).
    pub fn feature_size(self, input_size: i64) -> i64 {
        match self {
            Arch::ResNet34 => resnet::feature_size(input_size),
            Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => {
                efficientnet::feature_size(input_size)
            }
        }
    }

    /// Per-channel (mean, std) of RGB in 0..1 that the pretrained weights
    /// expect: ImageNet statistics for torchvision's ResNet34; the TF Lite
    /// models' `(x - 127) / 128` for EfficientNet-Lite0/1/2.
    pub fn input_normalization(self) -> ([f32; 3], [f32; 3]) {
        match self {
            Arch::ResNet34 => ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            Arch::EfficientNetLite0 | Arch::EfficientNetLite1 | Arch::EfficientNetLite2 => {
                ([127.0 / 255.0; 3], [128.0 / 255.0; 3])
            }
        }
    }

    /// Layer group (0 or 1) of a body variable, by its PyTorch name.
    fn body_group_of(self, name: &str) -> usize {
        match self.lite_variant() {
            None => resnet::group_of(name),
            Some(variant) => variant.group_of(name),
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = ModelZooError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "resnet34" => Ok(Arch::ResNet34),
            "efficientnet-lite0" => Ok(Arch::EfficientNetLite0),
            "efficientnet-lite1" => Ok(Arch::EfficientNetLite1),
            "efficientnet-lite2" => Ok(Arch::EfficientNetLite2),
            other => Err(ModelZooError::UnknownArch(other.to_string())),
        }
    }
}

/// What a body's forward pass gives: its last feature map (stride 32) and the
/// map before its last downsampling (stride 16).
pub struct BodyMaps {
    pub stride16: Tensor,
    pub last: Tensor,
}

/// The feature map a head reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FeatureMap {
    /// The body's last map, as every lesson head reads it.
    #[default]
    Last,
    /// The last map with the stride-16 map beside it, each 2x2 block of the
    /// finer map folded into channels (`pixel_unshuffle`) so both share the
    /// last map's grid: the detector's cells then see detail at twice their
    /// resolution (SSD reads stride-8 and stride-16 maps for the same reason).
    WithStride16,
}

impl BodyMaps {
    /// The map a head reads.
    fn feature_map(self, map: FeatureMap) -> Tensor {
        match map {
            FeatureMap::Last => self.last,
            FeatureMap::WithStride16 => {
                // A stride-2 layer's output side is ceil(side / 2): an odd
                // stride-16 side gets one zero row and column to fold evenly
                // (an even one is folded as it is, without a padded copy).
                let size = self.stride16.size();
                let (bottom, right) = (size[2] % 2, size[3] % 2);
                let fine = if bottom + right > 0 {
                    self.stride16.constant_pad_nd([0, right, 0, bottom])
                } else {
                    self.stride16
                };
                Tensor::cat(&[self.last, fine.pixel_unshuffle(2)], 1)
            }
        }
    }
}

enum Body {
    ResNet34(resnet::ResNet34),
    EfficientNetLite(efficientnet::EfficientNetLite),
}

/// A backbone with a head.
pub struct Net {
    arch: Arch,
    body: Body,
    head: head::Head,
    input_size: i64,
    /// The map the head reads (its spec's [`HeadSpec::feature_map`]).
    feature_map: FeatureMap,
    /// fastai's `bn_freeze` ([`Net::set_bn_freeze`]).
    bn_frozen: bool,
}

impl Net {
    /// Builds the model with freshly initialised weights (torchvision's and
    /// fastai's initialisation). `input_size` is the side of the square input
    /// the head is sized for (only heads that flatten the feature map care).
    pub fn new(vs_root: &nn::Path, arch: Arch, head: HeadSpec, input_size: i64) -> Net {
        let body = match arch.lite_variant() {
            None => Body::ResNet34(resnet::ResNet34::new(vs_root)),
            Some(variant) => {
                Body::EfficientNetLite(efficientnet::EfficientNetLite::new(vs_root, variant))
            }
        };
        let feature_size = arch.feature_size(input_size);
        let feature_map = head.feature_map();
        let head = head::Head::new(
            &vs_root.set_group(HEAD_GROUP).sub("head"),
            head,
            arch.head_channels(feature_map),
            feature_size,
        );
        Net {
            arch,
            body,
            head,
            input_size,
            feature_map,
            bn_frozen: false,
        }
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Stochastic depth (drop-connect) of the EfficientNet-Lite bodies while a group
    /// trains: the last block's rate, earlier blocks less (default
    /// [`DROP_CONNECT_RATE`]); 0 turns it off. ResNet34 has none.
    pub fn set_drop_connect(&mut self, max_rate: f64) {
        match &mut self.body {
            Body::ResNet34(_) => {}
            Body::EfficientNetLite(body) => body.set_drop_connect(max_rate),
        }
    }

    /// fastai 0.7's `learn.bn_freeze(True)`: the body's BatchNorm layers keep the
    /// pretrained running statistics and normalise with them while their groups
    /// train (the head's BatchNorm still learns).
    pub fn set_bn_freeze(&mut self, frozen: bool) {
        self.bn_frozen = frozen;
    }

    pub fn input_size(&self) -> i64 {
        self.input_size
    }

    pub fn n_groups(&self) -> usize {
        N_GROUPS
    }

    /// The layer group of a variable of this net's VarStore (its name as in
    /// `VarStore::variables()`); also the optimiser group it was created in.
    pub fn group_of(&self, var_name: &str) -> usize {
        if var_name.starts_with("head.") {
            HEAD_GROUP
        } else {
            self.arch.body_group_of(var_name)
        }
    }

    /// (channels, height, width) of the feature map the head reads, for this
    /// net's input size.
    pub fn feature_shape(&self) -> (i64, i64, i64) {
        let side = self.arch.feature_size(self.input_size);
        (self.arch.head_channels(self.feature_map), side, side)
    }

    /// The body's feature map the head reads, `[N, C, H, W]`. `train_groups[g]`: whether
    /// layer group g uses batch statistics (and updates its running ones) and
    /// dropout; groups past the slice's end run in eval mode.
    pub fn features(&self, x: &Tensor, train_groups: &[bool]) -> Tensor {
        let train = [0, 1].map(|g| train_groups.get(g).copied().unwrap_or(false));
        let batch_stats = train.map(|t| t && !self.bn_frozen);
        let maps = match &self.body {
            // BatchNorm is all that trains differently in ResNet34's body.
            Body::ResNet34(body) => body.forward(x, batch_stats[0], batch_stats[1]),
            Body::EfficientNetLite(body) => body.forward(x, train, batch_stats),
        };
        maps.feature_map(self.feature_map)
    }

    /// The head applied to a feature map.
    pub fn head_forward(&self, features: &Tensor, train: bool) -> Tensor {
        self.head.forward(features, train)
    }

    /// The whole model, with per-group train flags as in [`Net::features`].
    pub fn forward(&self, x: &Tensor, train_groups: &[bool]) -> Tensor {
        let features = self.features(x, train_groups);
        self.head_forward(
            &features,
            train_groups.get(HEAD_GROUP).copied().unwrap_or(false),
        )
    }
}

/// SAME-padding amounts `(before, after)` of TensorFlow for one spatial dim:
/// the output has `ceil(input / stride)` positions and an odd total goes after
/// (bottom / right), as in the TF checkpoints the Lite0 weights come from.
pub fn tf_same_padding(input: i64, kernel: i64, stride: i64) -> (i64, i64) {
    let output = (input + stride - 1) / stride;
    let total = ((output - 1) * stride + kernel - input).max(0);
    (total / 2, total - total / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names_round_trip() {
        for arch in [
            Arch::ResNet34,
            Arch::EfficientNetLite0,
            Arch::EfficientNetLite1,
            Arch::EfficientNetLite2,
        ] {
            assert_eq!(arch.name().parse::<Arch>().unwrap(), arch);
        }
        let err = "resnet50".parse::<Arch>().unwrap_err().to_string();
        assert!(err.contains("`resnet50`"), "{err}");
    }

    #[test]
    fn tf_same_padding_puts_the_odd_pixel_after() {
        // (input, kernel, stride) -> (before, after)
        let cases = [
            ((224, 3, 2), (0, 1)),
            ((112, 5, 2), (1, 2)),
            ((56, 3, 1), (1, 1)),
            ((7, 5, 1), (2, 2)),
            ((225, 3, 2), (1, 1)),
        ];
        for ((input, kernel, stride), want) in cases {
            assert_eq!(
                tf_same_padding(input, kernel, stride),
                want,
                "input {input} kernel {kernel} stride {stride}"
            );
        }
    }
}
