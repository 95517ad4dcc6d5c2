//! The single-shot detector learns: on synthetic images with several coloured
//! rectangles each (the colour is the class), a small body with the lesson's
//! SSD head, trained with the lesson's loss, finds them with mAP@0.5 >= 0.8,
//! scored by `multibox::map` as VOC scores a detector.

use model_zoo::{ssd_grid_sides, SsdHead, LESSON_SSD_DROPOUT};
use multibox::anchors::{AnchorParams, Anchors};
use multibox::map::{evaluate, GroundTruth, ScoredBox, VOC_IOU_THRESHOLD};
use multibox::nms::NmsParams;
use rand::{Rng, SeedableRng};
use tch::nn::{self, ModuleT, OptimizerConfig};
use tch::{Device, Kind, Tensor};
use trainer::ssd::{ImageObjects, Ssd, SsdLossParams};

const SIZE: usize = 64;
const CLASS_COLOURS: [[f32; 3]; 3] = [[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]];

/// One image: pixels (CHW) and its objects as inclusive pixel boxes.
struct Image {
    pixels: Vec<f32>,
    boxes: Vec<[usize; 4]>,
    classes: Vec<usize>,
}

/// 1 to 3 rectangles of 14..40 px per image, none overlapping another.
fn images(n: usize, seed: u64) -> Vec<Image> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let wanted = rng.random_range(1..=3usize);
            let mut boxes: Vec<[usize; 4]> = Vec::new();
            for _ in 0..50 {
                if boxes.len() == wanted {
                    break;
                }
                let (h, w) = (rng.random_range(14..40), rng.random_range(14..40));
                let (top, left) = (rng.random_range(0..SIZE - h), rng.random_range(0..SIZE - w));
                let b = [top, left, top + h - 1, left + w - 1];
                let apart =
                    |o: &[usize; 4]| b[2] < o[0] || o[2] < b[0] || b[3] < o[1] || o[3] < b[1];
                if boxes.iter().all(apart) {
                    boxes.push(b);
                }
            }
            let classes: Vec<usize> = boxes.iter().map(|_| rng.random_range(0..3)).collect();
            let mut pixels = vec![0f32; 3 * SIZE * SIZE];
            for c in 0..3 {
                for y in 0..SIZE {
                    for x in 0..SIZE {
                        let inside = boxes
                            .iter()
                            .position(|b| y >= b[0] && y <= b[2] && x >= b[1] && x <= b[3]);
                        let noise: f32 = rng.random_range(-0.3..0.3);
                        pixels[(c * SIZE + y) * SIZE + x] =
                            inside.map_or(0.0, |o| CLASS_COLOURS[classes[o]][c]) + noise;
                    }
                }
            }
            Image {
                pixels,
                boxes,
                classes,
            }
        })
        .collect()
}

/// The boxes as the loss takes them: `0..1` units, continuous (an inclusive
/// pixel box `top..=bottom` covers `top / size .. (bottom + 1) / size`).
fn objects(image: &Image) -> ImageObjects {
    let s = SIZE as f32;
    ImageObjects {
        boxes: image
            .boxes
            .iter()
            .map(|b| {
                [
                    b[0] as f32 / s,
                    b[1] as f32 / s,
                    (b[2] + 1) as f32 / s,
                    (b[3] + 1) as f32 / s,
                ]
            })
            .collect(),
        classes: image.classes.clone(),
    }
}

/// Three stride-2 convolutions: 64 px to an 8x8 map of 64 channels, where the
/// head's grids are 4x4, 2x2 and 1x1 as on a 7x7 backbone map.
struct Detector {
    body: nn::SequentialT,
    head: SsdHead,
}

impl Detector {
    fn new(vs: &nn::Path, classes: i64, anchors_per_cell: i64) -> Self {
        let conv = nn::ConvConfig {
            stride: 2,
            padding: 1,
            ..Default::default()
        };
        let mut body = nn::seq_t();
        for (i, (c_in, c_out)) in [(3, 32), (32, 64), (64, 64)].into_iter().enumerate() {
            body = body
                .add(nn::conv2d(vs / format!("conv{i}"), c_in, c_out, 3, conv))
                .add(nn::batch_norm2d(
                    vs / format!("bn{i}"),
                    c_out,
                    Default::default(),
                ))
                .add_fn(|x| x.relu());
        }
        Detector {
            body,
            head: SsdHead::new(
                &(vs / "head"),
                64,
                false,
                3,
                anchors_per_cell,
                classes,
                LESSON_SSD_DROPOUT,
            ),
        }
    }

    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.head.forward(&self.body.forward_t(x, train), train)
    }
}

fn batch_pixels(images: &[&Image]) -> Tensor {
    let pixels: Vec<f32> = images
        .iter()
        .flat_map(|i| i.pixels.iter().copied())
        .collect();
    Tensor::from_slice(&pixels).view([images.len() as i64, 3, SIZE as i64, SIZE as i64])
}

#[test]
fn ssd_finds_several_shapes_per_image_with_map_above_0_8() {
    tch::manual_seed(0);
    let anchors = Anchors::new(&AnchorParams::default()).unwrap();
    let grids: Vec<i64> = anchors.params.grids.iter().map(|&g| g as i64).collect();
    assert_eq!(
        ssd_grid_sides(8, 3),
        grids,
        "the head's grids are the anchors' grids"
    );
    let per_cell = anchors.params.anchors_per_cell() as i64;
    // The lesson's loss with the box part weighted 10 (see `SsdLossParams::box_weight`).
    let loss_params = SsdLossParams {
        box_weight: 10.0,
        ..SsdLossParams::default()
    };
    let ssd = Ssd::new(anchors, 3, loss_params);

    let vs = nn::VarStore::new(Device::Cpu);
    let model = Detector::new(&vs.root(), 3, per_cell);
    let mut opt = nn::Adam::default().build(&vs, 2e-3).unwrap();

    let train = images(1000, 1);
    let valid = images(80, 2);
    let mut order: Vec<usize> = (0..train.len()).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let epochs = 20;
    for epoch in 0..epochs {
        use rand::seq::SliceRandom;
        order.shuffle(&mut rng);
        let mut epoch_loss = 0.0;
        for chunk in order.chunks(32) {
            let batch: Vec<&Image> = chunk.iter().map(|&i| &train[i]).collect();
            let targets: Vec<ImageObjects> = batch.iter().map(|i| objects(i)).collect();
            let output = model.forward(&batch_pixels(&batch), true);
            let loss = ssd.loss(&output, &targets);
            opt.backward_step(&loss);
            epoch_loss += loss.double_value(&[]);
        }
        eprintln!(
            "epoch {epoch}: loss {:.3}",
            epoch_loss / (train.len() as f64 / 32.0)
        );
    }

    // VOC's mAP on the validation images, boxes back in inclusive pixels.
    let mut truths = Vec::new();
    for (image, v) in valid.iter().enumerate() {
        for (b, &class) in v.boxes.iter().zip(&v.classes) {
            truths.push(GroundTruth {
                image,
                class,
                bbox: b.map(|x| x as f32),
                difficult: false,
            });
        }
    }
    let params = NmsParams {
        score_threshold: 0.05,
        ..NmsParams::default()
    };
    let mut detections = Vec::new();
    for (start, chunk) in valid.chunks(40).enumerate() {
        let batch: Vec<&Image> = chunk.iter().collect();
        let output = tch::no_grad(|| model.forward(&batch_pixels(&batch), false));
        assert_eq!(output.kind(), Kind::Float);
        for (i, found) in ssd
            .detect(&output, &params)
            .unwrap()
            .into_iter()
            .enumerate()
        {
            for d in found {
                let s = SIZE as f32;
                let [t, l, b, r] = d.bbox;
                detections.push(ScoredBox {
                    image: start * 40 + i,
                    class: d.class,
                    score: d.score,
                    bbox: [t * s, l * s, b * s - 1.0, r * s - 1.0],
                });
            }
        }
    }
    let map = evaluate(&truths, &detections, 3, VOC_IOU_THRESHOLD).unwrap();
    let (voc07, all_points) = (map.map_voc07.unwrap(), map.map_all_points.unwrap());
    eprintln!(
        "synthetic SSD: mAP@0.5 {voc07:.3} (11-point), {all_points:.3} (all points), {} detections for {} objects",
        detections.len(),
        truths.len()
    );
    assert!(voc07 >= 0.8, "mAP@0.5 (11-point) {voc07}");
    assert!(all_points >= 0.8, "mAP@0.5 (all points) {all_points}");
}
