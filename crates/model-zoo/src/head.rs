//! Heads on top of a backbone's feature map, named as fastai's `nn.Sequential`
//! heads index their layers (`head.2.weight` is the first BatchNorm1d of the
//! classifier head, `head.1.weight` the Linear of the bbox head).

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::ssd_head::SsdHead;
use crate::FeatureMap;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum HeadSpec {
    /// fastai's default head: AdaptiveConcatPool2d (max, avg), Flatten,
    /// BatchNorm1d, Dropout(0.25), Linear(2F, 512), ReLU, BatchNorm1d,
    /// Dropout(0.5), Linear(512, classes).
    Classifier { classes: i64 },
    /// The lesson's bounding-box head: Flatten, Linear(F*H*W, outputs)
    /// (25088 -> 4 for ResNet34 at 224).
    FlattenLinear { outputs: i64 },
    /// The next lesson's head for the combined class + box model: Flatten, ReLU,
    /// Dropout(0.5), Linear(F*H*W, hidden), ReLU, BatchNorm1d, Dropout(0.5),
    /// Linear(hidden, outputs). Raw outputs: the task gives them their meaning
    /// (4 box numbers then the class scores).
    FlattenMlp { hidden: i64, outputs: i64 },
    /// The next lesson's single-shot multibox head ([`crate::SsdHead`]):
    /// `grids` stride-2 output grids (and, with `feature_grid`, one on the
    /// feature map first) of `anchors_per_cell` anchors, `classes` object
    /// classes, `dropout` in the head (the lesson's
    /// [`crate::LESSON_SSD_DROPOUT`]); outputs `[N, anchors, 4 + classes + 1]`.
    /// It reads `feature_map` (the lesson's: the body's last map).
    Ssd {
        feature_map: FeatureMap,
        feature_grid: bool,
        grids: i64,
        anchors_per_cell: i64,
        classes: i64,
        dropout: f64,
    },
}

impl HeadSpec {
    /// The body's map this head reads.
    pub fn feature_map(&self) -> FeatureMap {
        match self {
            HeadSpec::Ssd { feature_map, .. } => *feature_map,
            _ => FeatureMap::Last,
        }
    }
}

/// Dropout of both layers of [`HeadSpec::FlattenMlp`], as in the lesson.
const MLP_DROPOUT: f64 = 0.5;

/// fastai initialises head Linears with kaiming_normal_ and zero bias.
fn linear(vs: nn::Path, c_in: i64, c_out: i64) -> nn::Linear {
    nn::linear(
        vs,
        c_in,
        c_out,
        nn::LinearConfig {
            ws_init: nn::init::DEFAULT_KAIMING_NORMAL,
            bs_init: Some(nn::Init::Const(0.0)),
            bias: true,
        },
    )
}

pub enum Head {
    Classifier {
        bn1: nn::BatchNorm,
        lin1: nn::Linear,
        bn2: nn::BatchNorm,
        lin2: nn::Linear,
    },
    FlattenLinear {
        lin: nn::Linear,
    },
    FlattenMlp {
        lin1: nn::Linear,
        bn: nn::BatchNorm,
        lin2: nn::Linear,
    },
    Ssd(SsdHead),
}

impl Head {
    pub fn new(vs: &nn::Path, spec: HeadSpec, channels: i64, side: i64) -> Head {
        match spec {
            HeadSpec::Classifier { classes } => Head::Classifier {
                bn1: nn::batch_norm1d(vs / 2, 2 * channels, Default::default()),
                lin1: linear(vs / 4, 2 * channels, 512),
                bn2: nn::batch_norm1d(vs / 6, 512, Default::default()),
                lin2: linear(vs / 8, 512, classes),
            },
            HeadSpec::FlattenLinear { outputs } => Head::FlattenLinear {
                lin: linear(vs / 1, channels * side * side, outputs),
            },
            // Indices of the lesson's nn.Sequential: 0 Flatten, 1 ReLU, 2 Dropout,
            // 3 Linear, 4 ReLU, 5 BatchNorm1d, 6 Dropout, 7 Linear.
            HeadSpec::FlattenMlp { hidden, outputs } => Head::FlattenMlp {
                lin1: linear(vs / 3, channels * side * side, hidden),
                bn: nn::batch_norm1d(vs / 5, hidden, Default::default()),
                lin2: linear(vs / 7, hidden, outputs),
            },
            HeadSpec::Ssd {
                feature_map: _,
                feature_grid,
                grids,
                anchors_per_cell,
                classes,
                dropout,
            } => Head::Ssd(SsdHead::new(
                vs,
                channels,
                feature_grid,
                grids,
                anchors_per_cell,
                classes,
                dropout,
            )),
        }
    }

    pub fn forward(&self, features: &Tensor, train: bool) -> Tensor {
        match self {
            Head::Classifier {
                bn1,
                lin1,
                bn2,
                lin2,
            } => {
                let (max, _) = features.adaptive_max_pool2d([1, 1]);
                let avg = features.adaptive_avg_pool2d([1, 1]);
                let x = Tensor::cat(&[max, avg], 1).flatten(1, -1);
                let x = bn1
                    .forward_t(&x, train)
                    .dropout(0.25, train)
                    .apply(lin1)
                    .relu();
                bn2.forward_t(&x, train).dropout(0.5, train).apply(lin2)
            }
            Head::FlattenLinear { lin } => features.flatten(1, -1).apply(lin),
            Head::FlattenMlp { lin1, bn, lin2 } => {
                let x = features
                    .flatten(1, -1)
                    .relu()
                    .dropout(MLP_DROPOUT, train)
                    .apply(lin1)
                    .relu();
                bn.forward_t(&x, train)
                    .dropout(MLP_DROPOUT, train)
                    .apply(lin2)
            }
            Head::Ssd(head) => head.forward(features, train),
        }
    }
}
