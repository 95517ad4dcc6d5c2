//! The tasks of the lessons, their losses and their metrics.

use crate::data::Batch;
use crate::ssd::{Focal, ImageObjects, Ssd, SsdLossParams};
use multibox::map::{GroundTruth, ScoredBox, VOC_IOU_THRESHOLD};
use multibox::nms::{Detection, NmsParams};
use pipeline::params::{SsdParams, TaskKind};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// Boxes are learnt in the lesson's units: pixels of a 224 x 224 input.
pub const BOX_UNITS: f64 = 224.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Largest-object classification: cross-entropy over `classes` (sorted names).
    Classify { classes: Vec<String> },
    /// Largest-object box regression: L1 loss on `[top, left, bottom, right]`.
    Bbox,
    /// The next lesson's combined model: the largest object's box and class from one
    /// head whose outputs are 4 box numbers (through a sigmoid scaled to 224 units)
    /// then the class scores; loss = L1(box) + `class_weight` x cross-entropy.
    Combined {
        classes: Vec<String>,
        class_weight: f64,
    },
    /// The next lesson's single-shot multibox detector: every object's class and
    /// box from anchors on several grids (`model_zoo::SsdHead`, `crate::ssd`).
    Ssd {
        classes: Vec<String>,
        params: SsdParams,
    },
}

/// A model's raw output read as what the task predicts.
#[derive(Debug)]
pub struct Outputs {
    /// Log-probabilities of the classes (n x classes), for the tasks that classify.
    pub class_log_probs: Option<Tensor>,
    /// `[top, left, bottom, right]` in 224-pixel units (n x 4), for the tasks with boxes.
    pub boxes: Option<Tensor>,
    /// The detector's raw output `[n, anchors, 4 + classes + 1]`.
    pub detector: Option<Tensor>,
}

/// What a batch should give, on the model's device.
#[derive(Debug)]
pub struct Targets {
    /// Class index per image (n), for the tasks that classify.
    pub classes: Option<Tensor>,
    /// Boxes in input pixels (n x 4), for the tasks with boxes.
    pub boxes: Option<Tensor>,
    /// Every object of each image, boxes in `0..1` units of the input, for the detector.
    pub objects: Option<Vec<ImageObjects>>,
}

impl Task {
    /// What the model does, in a word.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Classify { .. } => "classifier",
            Task::Bbox => "box",
            Task::Combined { .. } => "class + box",
            Task::Ssd { .. } => "detector",
        }
    }

    /// The task as a pipeline file names it.
    pub fn kind(&self) -> TaskKind {
        match self {
            Task::Classify { .. } => TaskKind::Classify,
            Task::Bbox => TaskKind::Bbox,
            Task::Combined { .. } => TaskKind::Combined,
            Task::Ssd { .. } => TaskKind::Ssd,
        }
    }

    /// The class names, for the tasks that classify.
    pub fn classes(&self) -> Option<&[String]> {
        match self {
            Task::Classify { classes }
            | Task::Combined { classes, .. }
            | Task::Ssd { classes, .. } => Some(classes),
            Task::Bbox => None,
        }
    }

    /// Whether the task predicts one box per image (the largest object's).
    pub fn has_boxes(&self) -> bool {
        matches!(self, Task::Bbox | Task::Combined { .. })
    }

    /// What `batch` should give, on `device`: the parts of [`Targets`] the task has.
    pub fn targets(&self, batch: &Batch, device: Device) -> Targets {
        let per_image_classes = matches!(self, Task::Classify { .. } | Task::Combined { .. });
        let classes =
            per_image_classes.then(|| Tensor::from_slice(&batch.classes).to_device(device));
        let boxes = self.has_boxes().then(|| {
            Tensor::from_slice(batch.boxes.as_flattened())
                .view([batch.n as i64, 4])
                .to_device(device)
        });
        // The lesson's `bbox / sz`: the detector learns boxes in 0..1 units.
        let objects = matches!(self, Task::Ssd { .. }).then(|| {
            let unit = 1.0 / batch.size as f32;
            batch
                .objects
                .iter()
                .map(|objects| ImageObjects {
                    boxes: objects.iter().map(|o| o.bbox.map(|v| v * unit)).collect(),
                    classes: objects.iter().map(|o| o.class as usize).collect(),
                })
                .collect()
        });
        Targets {
            classes,
            boxes,
            objects,
        }
    }

    /// The detector's loss and decoding with its decoding params, for the detector task.
    pub fn detector(&self) -> Option<(Ssd, &NmsParams)> {
        let Task::Ssd { classes, params } = self else {
            return None;
        };
        let anchors = multibox::anchors::Anchors::new(&params.anchors)
            .expect("anchor params are checked where a detector task is made (Task::check)");
        let loss = SsdLossParams {
            match_threshold: params.match_threshold,
            focal: Focal {
                alpha: params.focal_alpha,
                gamma: params.focal_gamma,
            },
            box_weight: params.box_weight,
            box_loss: params.box_loss,
        };
        Some((Ssd::new(anchors, classes.len(), loss), &params.nms))
    }

    /// Refuses a task that cannot be built (a model file's metadata written by hand).
    pub fn check(&self) -> Result<(), String> {
        match self {
            Task::Ssd { params, .. } => params.check(),
            _ => Ok(()),
        }
    }

    /// Width of the model's output for the one-row-per-image tasks: the 4 box numbers
    /// first, then the class scores (the detector's rows are per anchor).
    pub fn outputs(&self) -> i64 {
        let boxes = if self.has_boxes() { 4 } else { 0 };
        boxes + self.classes().map_or(0, |c| c.len() as i64)
    }

    /// Names of the metric columns, in the order `MetricSums::values` gives them.
    pub fn metric_names(&self) -> &'static [&'static str] {
        match self {
            Task::Classify { .. } => &["accuracy"],
            Task::Bbox => &["l1_px", "mean_iou", "iou50"],
            Task::Combined { .. } => &["accuracy", "l1_px", "mean_iou", "iou50"],
            // VOC mAP at IoU 0.5 over the validation images, in input pixels; the
            // difficult objects are not in the training CSV, so detections of them count
            // as false positives (the evaluate stage scores original pixels and ignores them).
            // Then the validation loss's two parts, unweighted (which one a change
            // moved): the matched anchors' box L1 (in 0..1 units, or in anchor sides
            // with `ssd.box_loss = "l1_anchor_units"`) and the class focal
            // loss, each summed over a batch's images as the loss is;
            // val_loss = box_weight x box_l1 + class_focal.
            Task::Ssd { .. } => &["map50_11pt", "map50_all", "box_l1", "class_focal"],
        }
    }

    /// The model's raw output (n x `outputs()`) read as the task's predictions.
    pub fn decode(&self, output: &Tensor) -> Outputs {
        let output = output.to_kind(Kind::Float);
        match self {
            Task::Classify { .. } => Outputs {
                class_log_probs: Some(output.log_softmax(-1, Kind::Float)),
                boxes: None,
                detector: None,
            },
            // The lesson's bbox head is linear: its outputs are the box.
            Task::Bbox => Outputs {
                class_log_probs: None,
                boxes: Some(output),
                detector: None,
            },
            Task::Combined { .. } => Outputs {
                class_log_probs: Some(
                    output
                        .narrow(1, 4, output.size()[1] - 4)
                        .log_softmax(-1, Kind::Float),
                ),
                boxes: Some(output.narrow(1, 0, 4).sigmoid() * BOX_UNITS),
                detector: None,
            },
            Task::Ssd { .. } => Outputs {
                class_log_probs: None,
                boxes: None,
                detector: Some(output),
            },
        }
    }

    /// The loss of a batch of `input_size`-pixel images: the L1 of the boxes (in
    /// 224-pixel units) plus the weighted cross-entropy of the classes, for the parts
    /// the task has (the validation loss; training may smooth the labels, see
    /// [`Task::training_loss`]).
    pub fn loss(&self, outputs: &Outputs, targets: &Targets, input_size: usize) -> Tensor {
        self.training_loss(outputs, targets, input_size, 0.0)
    }

    /// [`Task::loss`] with the cross-entropy label-smoothed by `label_smoothing` (eps):
    /// `(1 - eps) x NLL + eps x` the mean over the classes of `-log p`, fastai v1's
    /// `LabelSmoothingCrossEntropy`. The detector's focal loss has no smoothing.
    pub fn training_loss(
        &self,
        outputs: &Outputs,
        targets: &Targets,
        input_size: usize,
        label_smoothing: f64,
    ) -> Tensor {
        if let (Some((ssd, _)), Some(output), Some(objects)) = (
            self.detector(),
            outputs.detector.as_ref(),
            targets.objects.as_ref(),
        ) {
            return ssd.loss(output, objects);
        }
        let class_weight = match self {
            Task::Combined { class_weight, .. } => *class_weight,
            _ => 1.0,
        };
        let box_loss = outputs
            .boxes
            .as_ref()
            .zip(targets.boxes.as_ref())
            .map(|(out, truth)| {
                let truth = truth * (BOX_UNITS / input_size as f64);
                (out - truth).abs().mean(Kind::Float)
            });
        let class_loss = outputs
            .class_log_probs
            .as_ref()
            .zip(targets.classes.as_ref())
            .map(|(log_probs, truth)| {
                let nll = log_probs.nll_loss(truth);
                let nll = if label_smoothing > 0.0 {
                    let uniform = -log_probs.mean_dim(-1, false, Kind::Float).mean(Kind::Float);
                    nll * (1.0 - label_smoothing) + uniform * label_smoothing
                } else {
                    nll
                };
                nll * class_weight
            });
        match (box_loss, class_loss) {
            (Some(b), Some(c)) => b + c,
            (Some(b), None) => b,
            (None, Some(c)) => c,
            (None, None) => unreachable!("every task predicts boxes, classes or detections"),
        }
    }
}

/// A box in `size x size` input pixels as a box in the original `(height, width)`
/// image: the inverse of the loader's squash (`coord * size / dim`), rounded to 0.1 px
/// and clamped to the image (the model may put a box partly outside it).
pub fn unsquash_box(bbox: [f32; 4], orig_size: (u32, u32), size: u32) -> [f32; 4] {
    let (h, w) = orig_size;
    let (sy, sx) = (h as f32 / size as f32, w as f32 / size as f32);
    let (max_y, max_x) = (h.saturating_sub(1) as f32, w.saturating_sub(1) as f32);
    let (scale, max) = ([sy, sx, sy, sx], [max_y, max_x, max_y, max_x]);
    std::array::from_fn(|i| ((bbox[i] * scale[i] * 10.0).round() / 10.0).clamp(0.0, max[i]))
}

/// A detection's `0..1` box as a box in the original `(height, width)` image, rounded
/// to 0.1 px as [`unsquash_box`] rounds (what the predict stage and `trainer predict`
/// write).
pub fn detection_in_original_pixels(bbox: [f32; 4], orig_size: (u32, u32), size: u32) -> [f32; 4] {
    multibox::nms::to_original_pixels(bbox, orig_size, size).map(|v| (v * 10.0).round() / 10.0)
}

/// Intersection over union of two `[top, left, bottom, right]` boxes taken as continuous
/// rectangles (area `(bottom - top) * (right - left)`, the area convention of the
/// largest-object step); degenerate or inverted boxes have no area.
pub use multibox::boxes::iou;

/// Running sums over a validation pass.
#[derive(Debug, Clone, Default)]
pub struct MetricSums {
    pub items: usize,
    pub loss_sum: f64,
    pub correct: usize,
    pub abs_err_sum: f64,
    pub iou_sum: f64,
    pub iou50: usize,
    /// The detector's detections and objects so far, in input pixels, numbered by
    /// image in the order they were added.
    pub detections: Vec<ScoredBox>,
    pub truths: Vec<GroundTruth>,
    pub detected_images: usize,
    /// The detector's loss parts ([`Ssd::loss_parts`]), summed as `loss_sum`.
    pub box_loss_sum: f64,
    pub class_loss_sum: f64,
}

impl MetricSums {
    /// Adds a batch of `n` images whose mean loss was `batch_loss`.
    pub fn add_loss(&mut self, batch_loss: f64, n: usize) {
        self.items += n;
        self.loss_sum += batch_loss * n as f64;
    }

    /// Adds the detector's loss parts of a batch of `n` images, weighted as
    /// [`MetricSums::add_loss`] weighs the loss they make up.
    pub fn add_loss_parts(&mut self, box_loss: f64, class_loss: f64, n: usize) {
        self.box_loss_sum += box_loss * n as f64;
        self.class_loss_sum += class_loss * n as f64;
    }

    /// Adds the predicted classes of a batch against the truth.
    pub fn add_classes(&mut self, predicted: &[i64], truth: &[i64]) {
        self.correct += predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    }

    /// Adds the predicted boxes of a batch of `input_size`-pixel images against the
    /// truth, both in input pixels. The L1 is summed in the lesson's units, pixels of a
    /// 224 x 224 input, whatever the input size (Lite1's 240 px and Lite2's 260 px
    /// compare with Lite0's 224); IoU does not depend on the scale.
    pub fn add_boxes(&mut self, predicted: &[[f32; 4]], truth: &[[f32; 4]], input_size: usize) {
        let to_box_units = BOX_UNITS / input_size as f64;
        for (p, t) in predicted.iter().zip(truth) {
            self.abs_err_sum += p
                .iter()
                .zip(t)
                .map(|(a, b)| (a - b).abs() as f64)
                .sum::<f64>()
                * to_box_units;
            let overlap = iou(*p, *t);
            self.iou_sum += overlap as f64;
            self.iou50 += usize::from(overlap >= 0.5);
        }
    }

    /// Adds a batch's detections (`0..1` boxes) against its objects (`0..1` boxes),
    /// scaled to `size`-pixel inputs.
    pub fn add_detections(
        &mut self,
        detections: &[Vec<Detection>],
        truths: &[ImageObjects],
        size: usize,
    ) {
        let pixels = |b: [f32; 4]| b.map(|v| v * size as f32);
        for (found, truth) in detections.iter().zip(truths) {
            let image = self.detected_images;
            self.detections.extend(found.iter().map(|d| ScoredBox {
                image,
                class: d.class,
                score: d.score,
                bbox: pixels(d.bbox),
            }));
            self.truths
                .extend(
                    truth
                        .boxes
                        .iter()
                        .zip(&truth.classes)
                        .map(|(&b, &class)| GroundTruth {
                            image,
                            class,
                            bbox: pixels(b),
                            difficult: false,
                        }),
                );
            self.detected_images += 1;
        }
    }

    /// Mean loss, weighted by batch size as fastai 0.7's `validate` does.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.items.max(1) as f64
    }

    /// Metric values in the order of `Task::metric_names`.
    pub fn values(&self, task: &Task) -> Vec<f64> {
        let n = self.items.max(1) as f64;
        let accuracy = self.correct as f64 / n;
        let boxes = [
            self.abs_err_sum / (4.0 * n),
            self.iou_sum / n,
            self.iou50 as f64 / n,
        ];
        match task {
            Task::Classify { .. } => vec![accuracy],
            Task::Bbox => boxes.to_vec(),
            Task::Combined { .. } => [&[accuracy][..], &boxes].concat(),
            Task::Ssd { classes, .. } => {
                // A detection box can come out inverted only from NaN weights; score
                // such a pass as NaN rather than fail the epoch.
                let (map_voc07, map_all_points) = match multibox::map::evaluate(
                    &self.truths,
                    &self.detections,
                    classes.len(),
                    VOC_IOU_THRESHOLD,
                ) {
                    Ok(map) => (map.map_voc07, map.map_all_points),
                    Err(_) => (None, None),
                };
                vec![
                    map_voc07.unwrap_or(f64::NAN),
                    map_all_points.unwrap_or(f64::NAN),
                    self.box_loss_sum / n,
                    self.class_loss_sum / n,
                ]
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_known_boxes() {
        let cases: [([f32; 4], [f32; 4], f32); 4] = [
            ([0., 0., 10., 10.], [0., 0., 10., 10.], 1.0),
            ([0., 0., 10., 10.], [0., 5., 10., 15.], 50.0 / 150.0),
            ([0., 0., 10., 10.], [20., 20., 30., 30.], 0.0),
            ([0., 0., 10., 10.], [2., 2., 8., 8.], 36.0 / 100.0),
        ];
        for (a, b, want) in cases {
            assert!((iou(a, b) - want).abs() < 1e-6, "{a:?} {b:?}");
            assert!((iou(b, a) - want).abs() < 1e-6);
        }
    }

    #[test]
    fn box_metrics() {
        let mut sums = MetricSums::default();
        sums.add_loss(2.0, 2);
        sums.add_boxes(
            &[[0., 0., 10., 10.], [0., 0., 10., 10.]],
            &[[0., 0., 10., 10.], [0., 5., 10., 15.]],
            224,
        );
        let v = sums.values(&Task::Bbox);
        assert!((v[0] - 10.0 / 8.0).abs() < 1e-9); // errors 0,0,0,0 and 0,5,0,5
        assert!((v[1] - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-6);
        assert_eq!(v[2], 0.5);
        assert_eq!(sums.loss(), 2.0);
        // The same error on a 448-pixel input is half as many 224-pixel units.
        let mut large = MetricSums::default();
        large.add_boxes(&[[0., 0., 10., 10.]], &[[0., 5., 10., 15.]], 448);
        assert!((large.values(&Task::Bbox)[0] - 10.0 / 8.0).abs() < 1e-9);
    }

    #[test]
    fn unsquash_inverts_the_squash_and_clamps() {
        // A 448 x 112 image (h, w) squashed to 224: y halves, x doubles.
        let b = unsquash_box([10.0, 20.0, 100.0, 200.0], (448, 112), 224);
        assert_eq!(b, [20.0, 10.0, 200.0, 100.0]);
        let outside = unsquash_box([-5.0, -5.0, 300.0, 300.0], (448, 112), 224);
        assert_eq!(outside, [0.0, 0.0, 447.0, 111.0]);
    }

    #[test]
    fn the_combined_output_is_a_squashed_box_then_class_scores() {
        let task = Task::Combined {
            classes: vec!["cat".into(), "dog".into(), "car".into()],
            class_weight: pipeline::params::LESSON_CLASS_LOSS_WEIGHT,
        };
        assert_eq!(task.outputs(), 7);
        // Box outputs 0 -> the middle of the 224 range; class scores -> log-softmax.
        let raw = Tensor::from_slice(&[0.0f32, 0.0, 100.0, -100.0, 1.0, 1.0, 1.0]).view([1, 7]);
        let outputs = task.decode(&raw);
        let want_box = Tensor::from_slice(&[112.0f32, 112.0, 224.0, 0.0]).view([1, 4]);
        assert!(outputs
            .boxes
            .as_ref()
            .unwrap()
            .allclose(&want_box, 1e-4, 1e-4, false));
        let probs = outputs.class_log_probs.as_ref().unwrap().exp();
        assert!(probs.allclose(
            &Tensor::full([1, 3], 1.0 / 3.0, (Kind::Float, tch::Device::Cpu)),
            1e-6,
            1e-6,
            false
        ));
        // Loss = L1 (224 units) + 20 x cross-entropy: truth box 56 px off on every side
        // of a 448 input (28 in 224 units) and class 1 (cross-entropy ln 3).
        let targets = Targets {
            classes: Some(Tensor::from_slice(&[1i64])),
            boxes: Some(Tensor::from_slice(&[168.0f32, 168.0, 392.0, 56.0]).view([1, 4])),
            objects: None,
        };
        let loss = task.loss(&outputs, &targets, 448).double_value(&[]);
        let want = (28.0 + 28.0 + 28.0 + 28.0) / 4.0 + 20.0 * 3f64.ln();
        assert!((loss - want).abs() < 1e-3, "{loss} != {want}");
        // The class part alone is the classifier's cross-entropy.
        let classify = Task::Classify {
            classes: vec!["cat".into(), "dog".into(), "car".into()],
        };
        let class_only = Targets {
            classes: targets.classes,
            boxes: None,
            objects: None,
        };
        let ce = classify
            .loss(&classify.decode(&raw.narrow(1, 4, 3)), &class_only, 448)
            .double_value(&[]);
        assert!((ce - 3f64.ln()).abs() < 1e-5);
    }

    #[test]
    fn combined_metrics_give_accuracy_then_the_box_figures() {
        let task = Task::Combined {
            classes: vec!["a".into(), "b".into()],
            class_weight: 1.0,
        };
        let mut sums = MetricSums::default();
        sums.add_loss(1.0, 2);
        sums.add_classes(&[0, 1], &[0, 0]);
        sums.add_boxes(&[[0., 0., 10., 10.]; 2], &[[0., 0., 10., 10.]; 2], 224);
        assert_eq!(sums.values(&task), vec![0.5, 0.0, 1.0, 1.0]);
        assert_eq!(task.metric_names().len(), 4);
    }

    #[test]
    fn bbox_loss_is_in_224_units() {
        let out = Task::Bbox.decode(&Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]).view([1, 4]));
        let targets = Targets {
            classes: None,
            boxes: Some(Tensor::from_slice(&[64.0f32, 64.0, 64.0, 64.0]).view([1, 4])),
            objects: None,
        };
        // 64 px of a 448 input are 32 px of 224.
        let loss = Task::Bbox.loss(&out, &targets, 448).double_value(&[]);
        assert!((loss - 32.0).abs() < 1e-6);
    }

    #[test]
    fn label_smoothing_mixes_the_nll_with_the_mean_over_classes() {
        let task = Task::Classify {
            classes: vec!["a".into(), "b".into(), "c".into()],
        };
        let probs = [0.7f64, 0.2, 0.1];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        let out = task.decode(&Tensor::from_slice(&logits).view([1, 3]));
        let targets = Targets {
            classes: Some(Tensor::from_slice(&[1i64])),
            boxes: None,
            objects: None,
        };
        let nll = -probs[1].ln();
        let uniform = -probs.iter().map(|p| p.ln()).sum::<f64>() / 3.0;
        let plain = task
            .training_loss(&out, &targets, 224, 0.0)
            .double_value(&[]);
        assert!((plain - nll).abs() < 1e-5, "{plain} vs {nll}");
        assert_eq!(plain, task.loss(&out, &targets, 224).double_value(&[]));
        let smoothed = task
            .training_loss(&out, &targets, 224, 0.1)
            .double_value(&[]);
        let expected = 0.9 * nll + 0.1 * uniform;
        assert!(
            (smoothed - expected).abs() < 1e-5,
            "{smoothed} vs {expected}"
        );
    }
}
