//! One training step of the next lesson's single-shot detector as
//! `pipelines/ssd.toml` trains it (EfficientNet-Lite0 body, `SsdHead` with the
//! lesson's 189 anchors and 20 classes, `trainer::ssd`'s loss, Adam): the Rust
//! side of `cargo xtask bench ssd`, beside scripts/bench/peer_ssd_step.py, whose
//! three lines it prints.
//!
//! usage: bench_ssd_step [BATCH] [STEPS] [THREADS] [SIZE]

use model_zoo::step_bench::{median_step_seconds, print_inference, print_step, set_body_trainable};
use model_zoo::{Arch, HeadSpec, Net};
use multibox::anchors::{AnchorParams, Anchors};
use std::time::Instant;
use tch::nn::{self, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use trainer::ssd::{ImageObjects, Ssd, SsdLossParams};

const CLASSES: usize = 20;

/// 3 objects of image `image`, by the peer's formula.
fn objects(image: usize) -> ImageObjects {
    let mut out = ImageObjects::default();
    for j in 0..3 {
        let top = ((image * 7 + j * 3) % 10) as f32 / 20.0;
        let left = ((image * 3 + j * 7) % 10) as f32 / 20.0;
        let h = 0.2 + ((image + j) % 4) as f32 / 10.0;
        let w = 0.2 + ((image * 2 + j) % 4) as f32 / 10.0;
        out.boxes.push([top, left, top + h, left + w]);
        out.classes.push((image * 3 + j) % CLASSES);
    }
    out
}

fn main() {
    let tensor_memory = model_zoo::configure_tensor_memory();
    eprintln!("tensor memory: {tensor_memory}");
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("BATCH STEPS THREADS SIZE are integers"))
        .collect();
    let batch = args.first().copied().unwrap_or(32);
    let steps = args.get(1).copied().unwrap_or(5);
    tch::set_num_threads(args.get(2).copied().unwrap_or(2) as i32);
    // The input side: 224 (the lesson's) by default; `cargo xtask bench ssd`
    // passes pipelines/ssd.toml's to both sides (256: an 8x8 feature map, still
    // the lesson's 4x4, 2x2, 1x1 grids).
    let size = args.get(3).copied().unwrap_or(224) as i64;
    tch::manual_seed(0);

    let params = AnchorParams::default();
    let vs = nn::VarStore::new(Device::Cpu);
    let net = Net::new(
        &vs.root(),
        Arch::EfficientNetLite0,
        HeadSpec::Ssd {
            feature_map: model_zoo::FeatureMap::Last,
            feature_grid: false,
            grids: params.grids.len() as i64,
            anchors_per_cell: params.anchors_per_cell() as i64,
            classes: CLASSES as i64,
            dropout: model_zoo::LESSON_SSD_DROPOUT,
        },
        size,
    );
    let ssd = Ssd::new(
        Anchors::new(&params).expect("the lesson's anchors"),
        CLASSES,
        SsdLossParams::default(),
    );
    let x = Tensor::randn([batch as i64, 3, size, size], (Kind::Float, Device::Cpu));
    let targets: Vec<ImageObjects> = (0..batch).map(objects).collect();

    // Head only: the body runs frozen, in eval mode and without autograd.
    set_body_trainable(&vs, &net, false);
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let head_only = median_step_seconds(steps, || {
        opt.zero_grad();
        let features = tch::no_grad(|| net.features(&x, &[false, false]));
        ssd.loss(&net.head_forward(&features, true), &targets)
            .backward();
        opt.step();
    });
    print_step("frozen body (head only)", batch as i64, head_only);

    set_body_trainable(&vs, &net, true);
    let mut opt = nn::Adam::default().build(&vs, 1e-3).unwrap();
    let full = median_step_seconds(steps, || {
        opt.zero_grad();
        ssd.loss(&net.forward(&x, &[true, true, true]), &targets)
            .backward();
        opt.step();
    });
    print_step("full fine-tune", batch as i64, full);

    let started = Instant::now();
    let _ = tch::no_grad(|| net.forward(&x, &[false; 3]));
    print_inference(batch as i64, started.elapsed().as_secs_f64());
}
