//! Heads on top of a backbone's feature map, named as fastai's `nn.Sequential`
//! heads index their layers (`head.2.weight` is the first BatchNorm1d of the
//! classifier head, `head.1.weight` the Linear of the bbox head).

use tch::nn::{self, ModuleT};
use tch::Tensor;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeadSpec {
    /// fastai's default head: AdaptiveConcatPool2d (max, avg), Flatten,
    /// BatchNorm1d, Dropout(0.25), Linear(2F, 512), ReLU, BatchNorm1d,
    /// Dropout(0.5), Linear(512, classes).
    Classifier { classes: i64 },
    /// The lesson's bounding-box head: Flatten, Linear(F*H*W, outputs)
    /// (25088 -> 4 for ResNet34 at 224).
    FlattenLinear { outputs: i64 },
}

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
        }
    }
}
