//! The next lesson's single-shot multibox head (`SSD_MultiHead`, DL2 2018
//! lesson 9):
//!
//! ```python
//! class StdConv(nn.Module):      # conv 3x3 -> ReLU -> BatchNorm -> Dropout
//! class OutConv(nn.Module):      # per grid: oconv1 (classes + 1) * k, oconv2 4 * k, both 3x3
//!     self.oconv1.bias.data.zero_().add_(bias)            # bias = -4
//! def forward(self, x):
//!     x = self.drop(F.relu(x))
//!     x = self.sconv0(x)                                  # stride 1: 7x7
//!     x = self.sconv1(x); o1c, o1l = self.out1(x)         # stride 2: 4x4
//!     x = self.sconv2(x); o2c, o2l = self.out2(x)         # 2x2
//!     x = self.sconv3(x); o3c, o3l = self.out3(x)         # 1x1
//!     return [torch.cat([o1c, o2c, o3c], 1), torch.cat([o1l, o2l, o3l], 1)]
//! ```
//!
//! Each output convolution's `k * n` channels on an `h x w` map become
//! `permute(0, 2, 3, 1).view(bs, -1, n)` (the lesson's `flatten_conv`): rows,
//! then columns, then the `k` anchors of a cell, the anchor order of
//! `multibox::anchors`. Unlike the lesson's two lists, the head returns one
//! tensor `[N, anchors, 4 + classes + 1]` (the 4 box activations first, as
//! every head here puts the box first; then the class logits with the
//! background column last), so a `Net` keeps one output.
//!
//! The lesson builds an `out0` on the 7x7 map and leaves it unused; with
//! `feature_grid` the head uses it, as a first, finer grid (7x7 for Lite0 at
//! 224 px: anchors a little over half the size of the 4x4 grid's, for the
//! small objects VOC has many of).

use tch::nn::{self, ModuleT};
use tch::Tensor;

/// Channels of the head's convolutions (the lesson's 256).
pub const SSD_CHANNELS: i64 = 256;
/// Dropout on the input and after every `StdConv` (the lesson's `drop=0.4`).
pub const LESSON_SSD_DROPOUT: f64 = 0.4;
/// The class convolutions start with this bias, so every class probability
/// starts near sigmoid(-4) = 0.018, as focal loss's authors advise for rare
/// positives (the lesson's `bias=-4.`).
const SSD_CLASS_BIAS: f64 = -4.0;

/// The side of each output grid for a `feature_side` map with `grids`
/// outputs: the first stride-2 convolution halves the map (rounding up, as a
/// 3x3 convolution with padding 1 does), and each further one halves again:
/// 7 -> `[4, 2, 1]`.
pub fn ssd_grid_sides(feature_side: i64, grids: i64) -> Vec<i64> {
    let mut side = feature_side;
    (0..grids)
        .map(|_| {
            side = (side + 1) / 2;
            side
        })
        .collect()
}

/// conv 3x3 (with bias) -> ReLU -> BatchNorm -> Dropout, the lesson's `StdConv`.
#[derive(Debug)]
struct StdConv {
    conv: nn::Conv2D,
    bn: nn::BatchNorm,
}

impl StdConv {
    fn new(vs: nn::Path, c_in: i64, c_out: i64, stride: i64) -> StdConv {
        let config = nn::ConvConfig {
            stride,
            padding: 1,
            ..Default::default()
        };
        StdConv {
            conv: nn::conv2d(&vs / "conv", c_in, c_out, 3, config),
            bn: nn::batch_norm2d(&vs / "bn", c_out, Default::default()),
        }
    }

    fn forward(&self, x: &Tensor, dropout: f64, train: bool) -> Tensor {
        self.bn
            .forward_t(&x.apply(&self.conv).relu(), train)
            .dropout(dropout, train)
    }
}

/// One grid's two output convolutions, the lesson's `OutConv`.
#[derive(Debug)]
struct OutConv {
    classes: nn::Conv2D,
    boxes: nn::Conv2D,
}

/// The single-shot multibox head: `grids` output grids (the lesson's 3), `k`
/// anchors per cell (9), `classes` object classes (20; the head adds the
/// background column).
#[derive(Debug)]
pub struct SsdHead {
    start: StdConv,
    /// `out0`, on `start`'s output, when the head predicts on the feature map itself.
    feature_out: Option<OutConv>,
    downs: Vec<StdConv>,
    outs: Vec<OutConv>,
    classes: i64,
    dropout: f64,
}

impl SsdHead {
    /// Variables live under `vs` with the lesson's module names (`sconv0`,
    /// `sconv1.conv`, `out1.oconv1`, ...; `out0` with `feature_grid`). `grids`
    /// counts the stride-2 grids ([`ssd_grid_sides`]); `feature_grid` adds one
    /// on the feature map's own side, first. `dropout` applies to the head's
    /// input and after each `StdConv` ([`LESSON_SSD_DROPOUT`]).
    pub fn new(
        vs: &nn::Path,
        channels: i64,
        feature_grid: bool,
        grids: i64,
        anchors_per_cell: i64,
        classes: i64,
        dropout: f64,
    ) -> Self {
        let conv = |stride| nn::ConvConfig {
            stride,
            padding: 1,
            ..Default::default()
        };
        let out_conv = |i: i64| {
            let vs = vs / format!("out{i}");
            let mut classes_conv = nn::conv2d(
                &vs / "oconv1",
                SSD_CHANNELS,
                (classes + 1) * anchors_per_cell,
                3,
                conv(1),
            );
            if let Some(bias) = classes_conv.bs.as_mut() {
                tch::no_grad(|| {
                    let _ = bias.fill_(SSD_CLASS_BIAS);
                });
            }
            OutConv {
                classes: classes_conv,
                boxes: nn::conv2d(
                    &vs / "oconv2",
                    SSD_CHANNELS,
                    4 * anchors_per_cell,
                    3,
                    conv(1),
                ),
            }
        };
        SsdHead {
            start: StdConv::new(vs / "sconv0", channels, SSD_CHANNELS, 1),
            feature_out: feature_grid.then(|| out_conv(0)),
            downs: (1..=grids)
                .map(|i| StdConv::new(vs / format!("sconv{i}"), SSD_CHANNELS, SSD_CHANNELS, 2))
                .collect(),
            outs: (1..=grids).map(out_conv).collect(),
            classes,
            dropout,
        }
    }

    /// `[N, anchors, 4 + classes + 1]`: per anchor, its 4 box activations
    /// (before the offset activation) then its class logits, background last.
    pub fn forward(&self, features: &Tensor, train: bool) -> Tensor {
        let mut x = self.start.forward(
            &features.relu().dropout(self.dropout, train),
            self.dropout,
            train,
        );
        let mut per_grid = Vec::with_capacity(self.outs.len() + 1);
        if let Some(out) = &self.feature_out {
            per_grid.push(self.anchor_rows(&x, out));
        }
        for (down, out) in self.downs.iter().zip(&self.outs) {
            x = down.forward(&x, self.dropout, train);
            per_grid.push(self.anchor_rows(&x, out));
        }
        Tensor::cat(&per_grid, 1)
    }

    /// One grid's `[N, cells * k, 4 + classes + 1]`.
    fn anchor_rows(&self, x: &Tensor, out: &OutConv) -> Tensor {
        let boxes = Self::flatten(&x.apply(&out.boxes), 4);
        let classes = Self::flatten(&x.apply(&out.classes), self.classes + 1);
        Tensor::cat(&[boxes, classes], 2)
    }

    /// The lesson's `flatten_conv`: `[N, k * n, h, w]` to `[N, h * w * k, n]`.
    fn flatten(x: &Tensor, n: i64) -> Tensor {
        let batch = x.size()[0];
        x.permute([0, 2, 3, 1]).contiguous().view([batch, -1, n])
    }
}
