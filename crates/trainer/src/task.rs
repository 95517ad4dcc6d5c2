//! The two tasks of the lesson, their losses and their metrics.

use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

/// Boxes are learnt in the lesson's units: pixels of a 224 x 224 input.
pub const BOX_UNITS: f64 = 224.0;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "task", rename_all = "snake_case")]
pub enum Task {
    /// Largest-object classification: cross-entropy over `classes` (sorted names).
    Classify { classes: Vec<String> },
    /// Largest-object box regression: L1 loss on `[top, left, bottom, right]`.
    Bbox,
}

impl Task {
    /// What the model does, in a word.
    pub fn name(&self) -> &'static str {
        match self {
            Task::Classify { .. } => "classifier",
            Task::Bbox => "box",
        }
    }

    pub fn outputs(&self) -> i64 {
        match self {
            Task::Classify { classes } => classes.len() as i64,
            Task::Bbox => 4,
        }
    }

    /// Names of the metric columns, in the order `Metrics::values` gives them.
    pub fn metric_names(&self) -> &'static [&'static str] {
        match self {
            Task::Classify { .. } => &["accuracy"],
            Task::Bbox => &["l1_px", "mean_iou", "iou50"],
        }
    }

    /// Merges the model's `output` on a batch of `size`-pixel images with its
    /// `mirrored` output on the same images flipped left-right, as one output of the
    /// same kind: for classes, the log of the averaged probabilities (so softmax and
    /// the cross-entropy loss read it as they read logits); for boxes (224-pixel
    /// units), the average of the box and the mirrored box flipped back (column `x`
    /// of the input mirrors to `size - 1 - x`, augment's `Affine::hflip`).
    pub fn merge_mirrored(&self, output: &Tensor, mirrored: &Tensor, size: usize) -> Tensor {
        match self {
            Task::Classify { .. } => {
                ((output.softmax(-1, Kind::Float) + mirrored.softmax(-1, Kind::Float)) / 2.0).log()
            }
            Task::Bbox => {
                let edge = (size as f64 - 1.0) * BOX_UNITS / size as f64;
                let [top, left, bottom, right] = [0, 1, 2, 3].map(|i| mirrored.select(1, i));
                let back = Tensor::stack(&[top, -right + edge, bottom, -left + edge], 1);
                (output.to_kind(Kind::Float) + back.to_kind(Kind::Float)) / 2.0
            }
        }
    }

    /// The training loss of a batch. `targets` is the class index (n) for classification,
    /// or the boxes in input pixels (n x 4) for bbox, scaled here to 224-pixel units.
    pub fn loss(&self, output: &Tensor, targets: &Tensor, input_size: usize) -> Tensor {
        match self {
            Task::Classify { .. } => output.cross_entropy_for_logits(targets),
            Task::Bbox => {
                let targets = targets * (BOX_UNITS / input_size as f64);
                (output - targets).abs().mean(Kind::Float)
            }
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

/// Intersection over union of two `[top, left, bottom, right]` boxes taken as continuous
/// rectangles (area `(bottom - top) * (right - left)`, the area convention of the
/// largest-object step); degenerate or inverted boxes have no area.
pub fn iou(a: [f32; 4], b: [f32; 4]) -> f32 {
    let area = |r: [f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let inter_h = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let inter_w = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = inter_h * inter_w;
    let union = area(a) + area(b) - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Running sums over a validation pass.
#[derive(Debug, Clone, Default)]
pub struct MetricSums {
    pub items: usize,
    pub loss_sum: f64,
    pub correct: usize,
    pub abs_err_sum: f64,
    pub iou_sum: f64,
    pub iou50: usize,
}

impl MetricSums {
    /// Adds a batch: its mean loss and, per image, the prediction against the truth.
    pub fn add_classes(&mut self, batch_loss: f64, predicted: &[i64], truth: &[i64]) {
        self.items += truth.len();
        self.loss_sum += batch_loss * truth.len() as f64;
        self.correct += predicted.iter().zip(truth).filter(|(p, t)| p == t).count();
    }

    /// Boxes in the same pixel units (the metrics report input pixels).
    pub fn add_boxes(&mut self, batch_loss: f64, predicted: &[[f32; 4]], truth: &[[f32; 4]]) {
        self.items += truth.len();
        self.loss_sum += batch_loss * truth.len() as f64;
        for (p, t) in predicted.iter().zip(truth) {
            self.abs_err_sum += p
                .iter()
                .zip(t)
                .map(|(a, b)| (a - b).abs() as f64)
                .sum::<f64>();
            let overlap = iou(*p, *t);
            self.iou_sum += overlap as f64;
            self.iou50 += usize::from(overlap >= 0.5);
        }
    }

    /// Mean loss, weighted by batch size as fastai 0.7's `validate` does.
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.items.max(1) as f64
    }

    /// Metric values in the order of `Task::metric_names`.
    pub fn values(&self, task: &Task) -> Vec<f64> {
        let n = self.items.max(1) as f64;
        match task {
            Task::Classify { .. } => vec![self.correct as f64 / n],
            Task::Bbox => vec![
                self.abs_err_sum / (4.0 * n),
                self.iou_sum / n,
                self.iou50 as f64 / n,
            ],
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
        sums.add_boxes(
            2.0,
            &[[0., 0., 10., 10.], [0., 0., 10., 10.]],
            &[[0., 0., 10., 10.], [0., 5., 10., 15.]],
        );
        let v = sums.values(&Task::Bbox);
        assert!((v[0] - 10.0 / 8.0).abs() < 1e-9); // errors 0,0,0,0 and 0,5,0,5
        assert!((v[1] - (1.0 + 1.0 / 3.0) / 2.0).abs() < 1e-6);
        assert_eq!(v[2], 0.5);
        assert_eq!(sums.loss(), 2.0);
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
    fn a_mirror_symmetric_prediction_is_unchanged_by_merging() {
        // In a 224 input, a box from column 50 to 173 is its own mirror image.
        let out = Tensor::from_slice(&[10.0f32, 50.0, 100.0, 173.0]).view([1, 4]);
        let merged = Task::Bbox.merge_mirrored(&out, &out, 224);
        assert!(merged.allclose(&out, 1e-5, 1e-5, false));
        // A box predicted on the mirror image maps back: 10..30 mirrors to 193..213.
        let left_box = Tensor::from_slice(&[0.0f32, 10.0, 20.0, 30.0]).view([1, 4]);
        let on_mirror = Tensor::from_slice(&[0.0f32, 193.0, 20.0, 213.0]).view([1, 4]);
        let merged = Task::Bbox.merge_mirrored(&left_box, &on_mirror, 224);
        assert!(merged.allclose(&left_box, 1e-5, 1e-5, false));
        // Classes: the average of the two distributions.
        let task = Task::Classify {
            classes: vec!["a".into(), "b".into()],
        };
        let a = Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2]); // 0.5, 0.5
        let b = Tensor::from_slice(&[(3.0f32).ln(), 0.0]).view([1, 2]); // 0.75, 0.25
        let probs = task.merge_mirrored(&a, &b, 224).softmax(-1, Kind::Float);
        let want = Tensor::from_slice(&[0.625f32, 0.375]).view([1, 2]);
        assert!(probs.allclose(&want, 1e-5, 1e-5, false));
    }

    #[test]
    fn bbox_loss_is_in_224_units() {
        let out = Tensor::from_slice(&[0.0f32, 0.0, 0.0, 0.0]).view([1, 4]);
        let target = Tensor::from_slice(&[64.0f32, 64.0, 64.0, 64.0]).view([1, 4]);
        // 64 px of a 448 input are 32 px of 224.
        let loss = Task::Bbox.loss(&out, &target, 448).double_value(&[]);
        assert!((loss - 32.0).abs() < 1e-6);
    }
}
