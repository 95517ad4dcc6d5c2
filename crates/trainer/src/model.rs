//! What the Learner needs from a network: a forward pass that takes, per layer group,
//! whether that group runs in training mode, and the map from variable names to groups.

use tch::{nn, Tensor};

/// A network split into fastai-style layer groups (e.g. two body halves and the head).
pub trait LayeredModel {
    /// Forward pass; `train_groups[g]` puts group `g` in training mode (BatchNorm uses
    /// and updates batch statistics, dropout is active). A frozen group gets `false`, so
    /// its BatchNorm running statistics stay as they are, as fastai 0.7 does.
    fn forward(&self, x: &Tensor, train_groups: &[bool]) -> Tensor;
    /// Number of layer groups.
    fn n_groups(&self) -> usize;
    /// Layer group of the VarStore variable named `var` (e.g. `body.layer1.0.conv1.weight`).
    fn group_of(&self, var: &str) -> usize;
}

/// A small three-group CNN (two conv+BatchNorm blocks and a linear head on a 4x4 pooled map), used by the
/// tests and by `random_init` runs where a tiny model is wanted. Its variables live under
/// `g0.`, `g1.` and `head.`.
#[derive(Debug)]
pub struct TinyCnn {
    conv0: nn::Conv2D,
    bn0: nn::BatchNorm,
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    head: nn::Linear,
}

impl TinyCnn {
    pub fn new(root: &nn::Path, outputs: i64) -> TinyCnn {
        let conv = nn::ConvConfig {
            stride: 2,
            padding: 1,
            bias: false,
            ..Default::default()
        };
        let g0 = root.sub("g0");
        let g1 = root.sub("g1");
        let head = root.sub("head");
        TinyCnn {
            conv0: nn::conv2d(&g0 / "conv", 3, 16, 3, conv),
            bn0: nn::batch_norm2d(&g0 / "bn", 16, Default::default()),
            conv1: nn::conv2d(&g1 / "conv", 16, 32, 3, conv),
            bn1: nn::batch_norm2d(&g1 / "bn", 32, Default::default()),
            // Pooled to 4x4, not 1x1, so the head still sees where things are (boxes).
            head: nn::linear(&head / "fc", 32 * 4 * 4, outputs, Default::default()),
        }
    }
}

impl LayeredModel for TinyCnn {
    fn forward(&self, x: &Tensor, train_groups: &[bool]) -> Tensor {
        let x = x
            .apply(&self.conv0)
            .apply_t(&self.bn0, train_groups[0])
            .relu();
        let x = x
            .apply(&self.conv1)
            .apply_t(&self.bn1, train_groups[1])
            .relu();
        x.adaptive_avg_pool2d([4, 4])
            .flatten(1, -1)
            .apply(&self.head)
    }

    fn n_groups(&self) -> usize {
        3
    }

    fn group_of(&self, var: &str) -> usize {
        if var.starts_with("g0.") {
            0
        } else if var.starts_with("g1.") {
            1
        } else {
            2
        }
    }
}
