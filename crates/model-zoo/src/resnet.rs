//! torchvision's ResNet34 body (no avgpool/fc), with torchvision's names.

use tch::nn::{self, ModuleT};
use tch::Tensor;

use crate::BodyMaps;

pub const FEATURES: i64 = 512;

/// Blocks per stage and their widths.
const STAGES: [(i64, i64); 4] = [(3, 64), (4, 128), (6, 256), (3, 512)];
/// Channels of layer3, the stride-16 map.
pub const STRIDE16_CHANNELS: i64 = STAGES[2].1;

/// Body layer group: conv1..layer2 are group 0, layer3 and layer4 group 1.
pub fn group_of(name: &str) -> usize {
    if name.starts_with("layer3.") || name.starts_with("layer4.") {
        1
    } else {
        0
    }
}

pub fn feature_size(input: i64) -> i64 {
    let conv = |n: i64, k: i64, s: i64, p: i64| (n + 2 * p - k) / s + 1;
    let mut side = conv(input, 7, 2, 3); // conv1
    side = conv(side, 3, 2, 1); // maxpool
    for _ in 1..STAGES.len() {
        side = conv(side, 3, 2, 1); // first block of layer2..4
    }
    side
}

/// torchvision initialises convolutions with kaiming_normal_(fan_out, relu).
fn conv(vs: nn::Path, c_in: i64, c_out: i64, kernel: i64, stride: i64, padding: i64) -> nn::Conv2D {
    let config = nn::ConvConfig {
        stride,
        padding,
        bias: false,
        ws_init: nn::Init::Kaiming {
            dist: nn::init::NormalOrUniform::Normal,
            fan: nn::init::FanInOut::FanOut,
            non_linearity: nn::init::NonLinearity::ReLU,
        },
        ..Default::default()
    };
    nn::conv2d(vs, c_in, c_out, kernel, config)
}

fn bn(vs: nn::Path, channels: i64) -> nn::BatchNorm {
    // PyTorch's defaults: eps 1e-5, momentum 0.1.
    nn::batch_norm2d(vs, channels, Default::default())
}

struct BasicBlock {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    conv2: nn::Conv2D,
    bn2: nn::BatchNorm,
    downsample: Option<(nn::Conv2D, nn::BatchNorm)>,
}

impl BasicBlock {
    fn new(vs: &nn::Path, c_in: i64, c_out: i64, stride: i64) -> Self {
        let downsample = (stride != 1 || c_in != c_out).then(|| {
            (
                conv(vs / "downsample" / 0, c_in, c_out, 1, stride, 0),
                bn(vs / "downsample" / 1, c_out),
            )
        });
        BasicBlock {
            conv1: conv(vs / "conv1", c_in, c_out, 3, stride, 1),
            bn1: bn(vs / "bn1", c_out),
            conv2: conv(vs / "conv2", c_out, c_out, 3, 1, 1),
            bn2: bn(vs / "bn2", c_out),
            downsample,
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        let mut out = self.bn1.forward_t(&x.apply(&self.conv1), train);
        let _ = out.relu_();
        let mut out = self.bn2.forward_t(&out.apply(&self.conv2), train);
        match &self.downsample {
            Some((conv, bn)) => out += bn.forward_t(&x.apply(conv), train),
            None => out += x,
        }
        let _ = out.relu_();
        out
    }
}

pub struct ResNet34 {
    conv1: nn::Conv2D,
    bn1: nn::BatchNorm,
    layers: Vec<Vec<BasicBlock>>,
}

impl ResNet34 {
    pub fn new(root: &nn::Path) -> Self {
        let mut layers = Vec::new();
        let mut c_in = 64;
        for (i, (blocks, width)) in STAGES.into_iter().enumerate() {
            let name = format!("layer{}", i + 1);
            let vs = root.set_group(group_of(&format!("{name}.")));
            let vs = &vs / name.as_str();
            let first_stride = if i == 0 { 1 } else { 2 };
            let stage = (0..blocks)
                .map(|b| {
                    let block = BasicBlock::new(
                        &(&vs / b),
                        c_in,
                        width,
                        if b == 0 { first_stride } else { 1 },
                    );
                    c_in = width;
                    block
                })
                .collect();
            layers.push(stage);
        }
        let stem = root.set_group(0);
        ResNet34 {
            conv1: conv(&stem / "conv1", 3, 64, 7, 2, 3),
            bn1: bn(&stem / "bn1", 64),
            layers,
        }
    }

    /// `train_early`: conv1..layer2, `train_late`: layer3..layer4.
    pub fn forward(&self, x: &Tensor, train_early: bool, train_late: bool) -> BodyMaps {
        let mut x = self.bn1.forward_t(&x.apply(&self.conv1), train_early);
        let _ = x.relu_();
        let mut x = x.max_pool2d([3, 3], [2, 2], [1, 1], [1, 1], false);
        let mut stride16 = None;
        for (i, stage) in self.layers.iter().enumerate() {
            if i == STAGES.len() - 1 {
                stride16 = Some(x.shallow_clone());
            }
            let train = if i < 2 { train_early } else { train_late };
            for block in stage {
                x = block.forward(&x, train);
            }
        }
        BodyMaps {
            stride16: stride16.expect("layer3 before layer4"),
            last: x,
        }
    }
}
