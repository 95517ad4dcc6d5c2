//! From the detector's outputs for one image to its detections: score
//! threshold, per-class non-maximum suppression, boxes in original pixels.
//!
//! The lesson (`show_nmf`, with `nms` from ssd.pytorch):
//!
//! ```python
//! a_ic = actn_to_bb(b_bb[idx], anchors)
//! conf_scores = b_clas[idx].sigmoid().t().data
//! for cl in range(0, len(conf_scores)-1):        # the last column is background
//!     c_mask = conf_scores[cl] > 0.25
//!     ...
//!     ids, count = nms(boxes.data, scores, 0.4, 50)
//! ```
//!
//! and `nms(boxes, scores, overlap, top_k)` sorts the candidates by score,
//! keeps the `top_k` best of them, then repeatedly takes the best remaining
//! box and drops every remaining box whose IoU with it is above `overlap`
//! (kept when `IoU <= overlap`). So `top_k` limits the candidates *before*
//! suppression, as in the lesson; at most `top_k` boxes per class survive.
//!
//! Ties in score are taken in anchor order (a stable sort, lower index
//! first); torch's sort does not promise an order among equals. A NaN score
//! is never above the threshold, so it is never a detection. IoU is the
//! continuous one (`boxes.rs`), on `0..1` boxes, as in the lesson.
//!
//! Detections come out class by class (ascending), best score first within
//! a class: the order of the lesson's `out1`/`out2`/`cc` lists.

use serde::{Deserialize, Serialize};

use crate::anchors::Anchors;
use crate::boxes::{iou, Corners};
use crate::matching::activations_to_box;

/// The lesson's decoding settings, as pipeline params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NmsParams {
    /// A class's box is a candidate when its probability is above this (0.25).
    #[serde(default = "default_score_threshold")]
    pub score_threshold: f32,
    /// A box is dropped when its IoU with a better box of its class is above this (0.4).
    #[serde(default = "default_iou_threshold")]
    pub iou_threshold: f32,
    /// At most this many candidates per class enter suppression (50).
    #[serde(default = "default_top_k")]
    pub top_k: usize,
}

fn default_score_threshold() -> f32 {
    0.25
}
fn default_iou_threshold() -> f32 {
    0.4
}
fn default_top_k() -> usize {
    50
}

impl Default for NmsParams {
    fn default() -> Self {
        NmsParams {
            score_threshold: default_score_threshold(),
            iou_threshold: default_iou_threshold(),
            top_k: default_top_k(),
        }
    }
}

/// Why outputs cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    #[error("decoding params: {0}")]
    Params(String),
    #[error("decoding: {what} has {got} values, expected {expected} ({why})")]
    Shape {
        what: &'static str,
        got: usize,
        expected: usize,
        why: String,
    },
}

impl NmsParams {
    /// Refuses thresholds that are not numbers in `0..=1` and a `top_k` of 0.
    pub fn check(&self) -> Result<(), DecodeError> {
        for (what, v) in [
            ("score_threshold", self.score_threshold),
            ("iou_threshold", self.iou_threshold),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(DecodeError::Params(format!(
                    "{what} = {v} is not between 0 and 1"
                )));
            }
        }
        if self.top_k == 0 {
            return Err(DecodeError::Params(
                "top_k = 0 would keep no detection".into(),
            ));
        }
        Ok(())
    }
}

/// One detected object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Index into the class list (0-based, background excluded).
    pub class: usize,
    /// The class's probability (sigmoid of its logit).
    pub score: f32,
    /// `[top, left, bottom, right]`: `0..1` units from [`detect`], original
    /// image pixels from [`decode_image`].
    pub bbox: Corners,
}

/// The lesson's `nms`: indices into `boxes`/`scores` of the boxes kept, best
/// score first. Only the `top_k` best-scoring boxes are considered; a box is
/// dropped when its IoU with a kept box is above `iou_threshold`; NaN scores
/// are skipped.
///
/// Panics if `boxes` and `scores` differ in length (callers pair them).
pub fn nms(boxes: &[Corners], scores: &[f32], iou_threshold: f32, top_k: usize) -> Vec<usize> {
    assert_eq!(boxes.len(), scores.len(), "one score per box");
    let mut order: Vec<usize> = (0..boxes.len()).filter(|&i| !scores[i].is_nan()).collect();
    // Stable: equal scores stay in index order.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    order.truncate(top_k);
    let mut keep: Vec<usize> = Vec::new();
    for i in order {
        if keep
            .iter()
            .all(|&k| iou(boxes[k], boxes[i]) <= iou_threshold)
        {
            keep.push(i);
        }
    }
    keep
}

/// Per-class detections of one image from its anchors' class probabilities
/// (`scores[a * classes + c]`, background column already dropped) and boxes
/// (`0..1` units, e.g. [`activations_to_box`]); boxes stay in `0..1` units.
pub fn detect(
    scores: &[f32],
    classes: usize,
    boxes: &[Corners],
    params: &NmsParams,
) -> Result<Vec<Detection>, DecodeError> {
    params.check()?;
    let expected = boxes.len() * classes;
    if scores.len() != expected {
        return Err(DecodeError::Shape {
            what: "scores",
            got: scores.len(),
            expected,
            why: format!("{} anchors x {classes} classes", boxes.len()),
        });
    }
    let mut detections = Vec::new();
    let (mut candidates, mut candidate_scores) = (Vec::new(), Vec::new());
    for class in 0..classes {
        candidates.clear();
        candidate_scores.clear();
        for (a, &bbox) in boxes.iter().enumerate() {
            let score = scores[a * classes + class];
            if score > params.score_threshold {
                candidates.push(bbox);
                candidate_scores.push(score);
            }
        }
        for i in nms(
            &candidates,
            &candidate_scores,
            params.iou_threshold,
            params.top_k,
        ) {
            detections.push(Detection {
                class,
                score: candidate_scores[i],
                bbox: candidates[i],
            });
        }
    }
    Ok(detections)
}

/// A `0..1` box of the `size x size` squashed input as a box of the original
/// `(height, width)` image: `v * size` is the squashed pixel, and the loader's
/// squash (`coord * size / dim`, `augment::squash_box`) is undone by
/// `* dim / size`; then clamped to the image, since a predicted box may stick
/// out of it. The same formula as the trainer's `unsquash_box`, without its
/// rounding to 0.1 px (left to whoever writes the box out).
pub fn to_original_pixels(bbox: Corners, orig_size: (u32, u32), size: u32) -> Corners {
    let (h, w) = orig_size;
    let size_f = size as f32;
    let (sy, sx) = (h as f32 / size_f, w as f32 / size_f);
    let (max_y, max_x) = (h.saturating_sub(1) as f32, w.saturating_sub(1) as f32);
    let (scale, max) = ([sy, sx, sy, sx], [max_y, max_x, max_y, max_x]);
    std::array::from_fn(|i| (bbox[i] * size_f * scale[i]).clamp(0.0, max[i]))
}

/// The logistic sigmoid, as the lesson applies to class logits.
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// One image's raw model outputs.
#[derive(Debug, Clone, Copy)]
pub struct RawOutputs<'a> {
    /// `class_logits[a * columns + c]`: the first `classes` columns are the
    /// classes; a further column, the lesson's background output, is ignored.
    pub class_logits: &'a [f32],
    pub columns: usize,
    /// Per anchor, the four box activations before `tanh`.
    pub box_activations: &'a [[f32; 4]],
}

/// One image's raw model outputs to its detections in original pixels,
/// given the `anchors` the model was trained with, the `(height, width)` of
/// the original image and the squash `size`.
pub fn decode_image(
    outputs: &RawOutputs,
    anchors: &Anchors,
    classes: usize,
    params: &NmsParams,
    orig_size: (u32, u32),
    size: u32,
) -> Result<Vec<Detection>, DecodeError> {
    let RawOutputs {
        class_logits,
        columns,
        box_activations,
    } = *outputs;
    let shape = |what, got, expected, why: String| {
        Err(DecodeError::Shape {
            what,
            got,
            expected,
            why,
        })
    };
    if columns < classes {
        return shape(
            "each anchor's class logits",
            columns,
            classes,
            "one column per class, plus optionally background".into(),
        );
    }
    if box_activations.len() != anchors.len() {
        return shape(
            "box_activations",
            box_activations.len(),
            anchors.len(),
            "one per anchor".into(),
        );
    }
    if class_logits.len() != anchors.len() * columns {
        return shape(
            "class_logits",
            class_logits.len(),
            anchors.len() * columns,
            format!("{} anchors x {columns} columns", anchors.len()),
        );
    }
    let boxes: Vec<Corners> = box_activations
        .iter()
        .zip(&anchors.anchors)
        .map(|(&act, anchor)| activations_to_box(act, anchor))
        .collect();
    let scores: Vec<f32> = class_logits
        .chunks_exact(columns)
        .flat_map(|row| row[..classes].iter().map(|&x| sigmoid(x)))
        .collect();
    let mut detections = detect(&scores, classes, &boxes, params)?;
    for d in &mut detections {
        d.bbox = to_original_pixels(d.bbox, orig_size, size);
    }
    Ok(detections)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchors::AnchorParams;

    #[test]
    fn nms_keeps_the_best_and_drops_overlaps_above_the_threshold() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.1, 1.0, 1.1], // IoU with 0: 0.9/1.1 = 0.818
            [0.0, 0.5, 1.0, 1.5], // IoU with 0: 1/3, with 1: 0.6/1.4 = 0.43
            [5.0, 5.0, 6.0, 6.0], // far away
        ];
        let scores = [0.9, 0.95, 0.5, 0.1];
        // Best is 1; 0 overlaps it 0.818 > 0.4: dropped; 2 overlaps 1 by 0.43 > 0.4: dropped.
        assert_eq!(nms(&boxes, &scores, 0.4, 50), [1, 3]);
        // At 0.5, box 2 survives (0.43 <= 0.5).
        assert_eq!(nms(&boxes, &scores, 0.5, 50), [1, 2, 3]);
        // The threshold is inclusive for keeping: IoU exactly 1/3 is kept at 1/3.
        assert_eq!(nms(&boxes[..3], &[0.9, 0.1, 0.5], 1.0 / 3.0, 50), [0, 2]);
    }

    #[test]
    fn nms_top_k_limits_the_candidates_before_suppression() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.05, 1.0, 1.05],
            [3.0, 3.0, 4.0, 4.0],
        ];
        let scores = [0.9, 0.8, 0.7];
        // top_k 2: candidates 0 and 1; 1 is suppressed by 0; 2 never considered.
        assert_eq!(nms(&boxes, &scores, 0.4, 2), [0]);
        assert_eq!(nms(&boxes, &scores, 0.4, 3), [0, 2]);
    }

    #[test]
    fn nms_ties_go_in_index_order_and_nan_is_skipped() {
        let boxes = [
            [0.0, 0.0, 1.0, 1.0],
            [0.0, 0.0, 1.0, 1.0],
            [2.0, 2.0, 3.0, 3.0],
            [4.0, 4.0, 5.0, 5.0],
        ];
        assert_eq!(nms(&boxes, &[0.5, 0.5, 0.5, f32::NAN], 0.4, 50), [0, 2]);
        assert!(nms(&[], &[], 0.4, 50).is_empty());
    }

    #[test]
    fn detect_thresholds_scores_and_suppresses_per_class() {
        let boxes = [
            [0.0, 0.0, 0.5, 0.5],
            [0.0, 0.02, 0.5, 0.52],
            [0.5, 0.5, 1.0, 1.0],
        ];
        // 3 anchors x 2 classes.
        #[rustfmt::skip]
        let scores = [
            0.9, 0.3,
            0.8, 0.6,
            0.25, 0.7,
        ];
        let d = detect(&scores, 2, &boxes, &NmsParams::default()).unwrap();
        // Class 0: anchors 0 and 1 overlap, 1 suppressed; anchor 2 at exactly 0.25 is not above.
        // Class 1: anchor 2 (0.7), anchor 1 (0.6), anchor 0 (0.3) suppressed by anchor 1.
        let got: Vec<(usize, f32, Corners)> =
            d.iter().map(|d| (d.class, d.score, d.bbox)).collect();
        assert_eq!(
            got,
            [(0, 0.9, boxes[0]), (1, 0.7, boxes[2]), (1, 0.6, boxes[1]),]
        );
        // A class's own boxes do not suppress another class's.
        let same_place = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.5, 0.5]];
        let d = detect(&[0.9, 0.0, 0.0, 0.8], 2, &same_place, &NmsParams::default()).unwrap();
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn detect_refuses_wrong_shapes_and_bad_params() {
        let boxes = [[0.0, 0.0, 1.0, 1.0]];
        let err = detect(&[0.5; 3], 2, &boxes, &NmsParams::default()).unwrap_err();
        assert!(err.to_string().contains("3 values, expected 2"), "{err}");
        for params in [
            NmsParams {
                score_threshold: f32::NAN,
                ..Default::default()
            },
            NmsParams {
                iou_threshold: 1.5,
                ..Default::default()
            },
            NmsParams {
                top_k: 0,
                ..Default::default()
            },
        ] {
            assert!(matches!(
                detect(&[0.5], 1, &boxes, &params),
                Err(DecodeError::Params(_))
            ));
        }
    }

    #[test]
    fn params_deserialise_with_the_lessons_defaults() {
        let p: NmsParams = toml::from_str("").unwrap();
        assert_eq!(
            p,
            NmsParams {
                score_threshold: 0.25,
                iou_threshold: 0.4,
                top_k: 50
            }
        );
        let p: NmsParams = toml::from_str("top_k = 100\niou_threshold = 0.45").unwrap();
        assert_eq!((p.top_k, p.iou_threshold), (100, 0.45));
        assert!(toml::from_str::<NmsParams>("topk = 3").is_err());
    }

    #[test]
    fn original_pixels_undo_the_squash_and_clamp() {
        // A 500 x 375 (w x h) image squashed to 224: a 0..1 box is v * dim.
        let b = to_original_pixels([0.25, 0.5, 0.75, 1.0], (375, 500), 224);
        let want = [0.25 * 375.0, 0.5 * 500.0, 0.75 * 375.0, 499.0];
        for (x, y) in b.iter().zip(want) {
            assert!((x - y).abs() < 1e-3, "{b:?} vs {want:?}");
        }
        // Outside the image: clamped to 0 and dim - 1.
        assert_eq!(
            to_original_pixels([-0.2, -0.1, 1.3, 1.2], (100, 200), 224),
            [0.0, 0.0, 99.0, 199.0]
        );
        // The inverse of augment's squash_box (coord * size / dim) on a pixel box.
        let (h, w, size) = (333u32, 500u32, 224u32);
        let pixel_box = [96.0f32, 155.0, 269.0, 350.0];
        let squashed = [
            pixel_box[0] * size as f32 / h as f32,
            pixel_box[1] * size as f32 / w as f32,
            pixel_box[2] * size as f32 / h as f32,
            pixel_box[3] * size as f32 / w as f32,
        ];
        let back = to_original_pixels(squashed.map(|v| v / size as f32), (h, w), size);
        for (x, y) in back.iter().zip(pixel_box) {
            assert!((x - y).abs() < 1e-3, "{back:?} vs {pixel_box:?}");
        }
    }

    #[test]
    fn decode_image_goes_from_raw_outputs_to_pixel_boxes() {
        let anchors = Anchors::new(&AnchorParams {
            grids: vec![2],
            zooms: vec![1.0],
            ratios: vec![[1.0, 1.0]],
        })
        .unwrap();
        // 4 anchors x (2 classes + background); anchor 3 says class 1 strongly.
        let mut logits = vec![-10.0f32; 4 * 3];
        logits[3 * 3 + 1] = 3.0;
        logits[3 * 3 + 2] = 10.0; // background column: ignored
        let box_activations = [[0.0; 4]; 4];
        let outputs = RawOutputs {
            class_logits: &logits,
            columns: 3,
            box_activations: &box_activations,
        };
        let d = decode_image(
            &outputs,
            &anchors,
            2,
            &NmsParams::default(),
            (200, 400),
            224,
        )
        .unwrap();
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].class, 1);
        assert_eq!(d[0].score, sigmoid(3.0));
        // The bottom-right cell of a 200 x 400 image, clamped to 199 and 399.
        let want = [100.0, 200.0, 199.0, 399.0];
        for (x, y) in d[0].bbox.iter().zip(want) {
            assert!((x - y).abs() < 1e-3, "{:?}", d[0].bbox);
        }
        let params = NmsParams::default();
        let short = RawOutputs {
            box_activations: &box_activations[..3],
            ..outputs
        };
        let err = decode_image(&short, &anchors, 2, &params, (1, 1), 224).unwrap_err();
        assert!(
            err.to_string()
                .contains("box_activations has 3 values, expected 4"),
            "{err}"
        );
        let narrow = RawOutputs {
            columns: 1,
            ..outputs
        };
        let err = decode_image(&narrow, &anchors, 2, &params, (1, 1), 224).unwrap_err();
        assert!(err.to_string().contains("class logits"), "{err}");
    }

    #[test]
    fn sigmoid_values() {
        assert_eq!(sigmoid(0.0), 0.5);
        assert!((sigmoid(2.0) - 0.880_797).abs() < 1e-6);
        assert!(sigmoid(-100.0) >= 0.0 && sigmoid(100.0) <= 1.0);
    }
}
