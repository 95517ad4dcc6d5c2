//! VOC average precision at IoU 0.5, per class and its mean (mAP), as the
//! VOC devkit computes it (`VOCevaldet.m`, `VOCap.m`).
//!
//! For each class separately:
//!
//! 1. Detections are sorted by score, best first. **Ties keep the order of
//!    the input** (a stable sort, as MATLAB's `sort` in the devkit; numpy's
//!    default `argsort`, used by some Python ports, does not promise one).
//! 2. Each detection, in that order, is compared with the ground truths of
//!    its class in its image: the one with the largest IoU is its candidate
//!    (the first among equals, counting only boxes that overlap at all).
//!    IoU counts inclusive pixels, as the devkit does: a box
//!    `[top, left, bottom, right]` is `bottom - top + 1` pixels high.
//!    * IoU below the threshold (0.5; `>=` passes, as in the devkit), or no
//!      ground truth: a **false positive**.
//!    * The candidate is difficult (`ignore` in the lesson's JSON): the
//!      detection is **ignored**, neither true nor false positive. Difficult
//!      boxes can absorb any number of detections.
//!    * The candidate is not yet detected: a **true positive**, and it is now
//!      detected. Already detected: a **false positive** (a duplicate), even
//!      if another ground truth would have matched; only the best one counts.
//! 3. Recall after each counted detection is `TP / P`, with `P` the class's
//!    non-difficult ground truths, and precision `TP / (TP + FP)`.
//! 4. AP from those points:
//!    * **VOC 2007, 11-point**: the mean over `t = 0, 0.1, ..., 1` of the
//!      best precision at recall `>= t` (0 where none). The thresholds are
//!      `k / 10`, the doubles nearest to the tenths; `np.arange(0, 1.1, 0.1)`
//!      (py-faster-rcnn) gives `0.30000000000000004` etc. instead, which
//!      differs only when a recall is exactly 3/10, 6/10 or 7/10.
//!    * **All points (VOC 2010 on)**: the area under the precision envelope
//!      (precision made non-increasing from the right), summed where recall
//!      changes, with `(0, 0)` before the first point and `(1, 0)` after the
//!      last.
//!
//! A class with no non-difficult ground truth has no AP (`None`): recall is
//! undefined. The mean AP is over the classes that have one; a class with
//! ground truths and no detections has AP 0 and counts.
//!
//! Beside AP, each class counts its found objects (its true positives) by
//! COCO's object sizes ([`ObjectSize`]): the recall by size says whether the
//! detector misses small objects or everything, which AP alone does not.
//!
//! The devkit also records a point for an ignored detection (same recall and
//! precision as the point before it, or precision 0 before any counted one);
//! such points change neither AP, so [`ClassAp::curve`] leaves them out.

use std::collections::HashMap;

/// VOC's IoU threshold for a true positive.
pub const VOC_IOU_THRESHOLD: f64 = 0.5;

/// A ground-truth object, `bbox` in inclusive pixels `[top, left, bottom, right]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Any number that identifies the image (the same for its detections).
    pub image: usize,
    pub class: usize,
    pub bbox: [f32; 4],
    /// `ignore` / `<difficult>`: neither rewarded nor penalised.
    pub difficult: bool,
}

/// A detection to score, `bbox` in the same pixels as the ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredBox {
    pub image: usize,
    pub class: usize,
    pub score: f32,
    pub bbox: [f32; 4],
}

/// What a detection was counted as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    TruePositive,
    FalsePositive,
    /// Its best ground truth is difficult.
    Ignored,
}

/// One point of a precision-recall curve: after the detections down to `score`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrPoint {
    pub score: f32,
    pub recall: f64,
    pub precision: f64,
}

/// COCO's object sizes, by area in inclusive pixels of the original image:
/// small under 32 x 32, medium under 96 x 96, large from there (on VOC's
/// 500 x 375 images, a small object's side is under a tenth of the image's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectSize {
    Small,
    Medium,
    Large,
}

impl ObjectSize {
    /// In the order of [`ClassAp::by_size`].
    pub const ALL: [ObjectSize; 3] = [ObjectSize::Small, ObjectSize::Medium, ObjectSize::Large];

    /// The size of an inclusive-pixel box `[top, left, bottom, right]`.
    pub fn of(bbox: [f32; 4]) -> ObjectSize {
        let [top, left, bottom, right] = bbox.map(f64::from);
        let area = (bottom - top + 1.0) * (right - left + 1.0);
        if area < 32.0 * 32.0 {
            ObjectSize::Small
        } else if area < 96.0 * 96.0 {
            ObjectSize::Medium
        } else {
            ObjectSize::Large
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ObjectSize::Small => "small",
            ObjectSize::Medium => "medium",
            ObjectSize::Large => "large",
        }
    }
}

/// Of one size's non-difficult objects, how many a detection found (a true
/// positive at the IoU threshold).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeRecall {
    pub objects: usize,
    pub found: usize,
}

impl SizeRecall {
    /// `found / objects`; `None` without objects.
    pub fn recall(self) -> Option<f64> {
        (self.objects > 0).then(|| self.found as f64 / self.objects as f64)
    }
}

/// One class's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassAp {
    pub class: usize,
    /// Non-difficult ground truths (`P`).
    pub positives: usize,
    pub difficult: usize,
    pub true_positives: usize,
    pub false_positives: usize,
    pub ignored: usize,
    /// VOC 2007 11-point AP; `None` without positives.
    pub ap_voc07: Option<f64>,
    /// All-point AP (VOC 2010 on); `None` without positives.
    pub ap_all_points: Option<f64>,
    /// One point per true or false positive, best score first; empty
    /// without positives (recall is undefined).
    pub curve: Vec<PrPoint>,
    /// The positives and the found ones by [`ObjectSize`], in the order of
    /// [`ObjectSize::ALL`].
    pub by_size: [SizeRecall; 3],
}

/// Every class's AP and their means.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanAp {
    /// One per class, in class order.
    pub classes: Vec<ClassAp>,
    /// Mean of the 11-point APs over classes with positives; `None` if none has.
    pub map_voc07: Option<f64>,
    /// Mean of the all-point APs over the same classes.
    pub map_all_points: Option<f64>,
}

/// The evaluate stage's `ap.csv`: one row per class, then `mean`.
pub const AP_TABLE_HEADER: [&str; 7] = [
    "class",
    "objects",
    "difficult",
    "true_positives",
    "false_positives",
    "ap_11pt",
    "ap_all",
];

/// An AP as the table shows it: 4 decimals, empty for a class without objects.
pub fn format_ap(ap: Option<f64>) -> String {
    ap.map(|v| format!("{v:.4}")).unwrap_or_default()
}

impl MeanAp {
    /// Every class's [`ClassAp::by_size`] summed.
    pub fn recall_by_size(&self) -> [SizeRecall; 3] {
        let mut total = [SizeRecall::default(); 3];
        for class in &self.classes {
            for (sum, size) in total.iter_mut().zip(class.by_size) {
                sum.objects += size.objects;
                sum.found += size.found;
            }
        }
        total
    }

    /// Writes `ap.csv` atomically: a row per class (named by `class_names`,
    /// APs to 4 decimals, empty for a class without objects), then the `mean`
    /// row with the summed counts.
    pub fn write_table(
        &self,
        path: &std::path::Path,
        class_names: &[String],
    ) -> std::io::Result<()> {
        use csv_export::write_record;
        let ap_text = format_ap;
        let counts = |c: &ClassAp| {
            [
                c.positives,
                c.difficult,
                c.true_positives,
                c.false_positives,
            ]
            .map(|n| n.to_string())
        };
        csv_export::write_atomic(path, |out| {
            write_record(out, &AP_TABLE_HEADER)?;
            for c in &self.classes {
                let [p, d, tp, fp] = counts(c);
                let (ap11, ap_all) = (ap_text(c.ap_voc07), ap_text(c.ap_all_points));
                write_record(
                    out,
                    &[&class_names[c.class], &p, &d, &tp, &fp, &ap11, &ap_all],
                )?;
            }
            let sum =
                |f: fn(&ClassAp) -> usize| self.classes.iter().map(f).sum::<usize>().to_string();
            let (p, d) = (sum(|c| c.positives), sum(|c| c.difficult));
            let (tp, fp) = (sum(|c| c.true_positives), sum(|c| c.false_positives));
            let (map11, map_all) = (ap_text(self.map_voc07), ap_text(self.map_all_points));
            write_record(out, &["mean", &p, &d, &tp, &fp, &map11, &map_all])
        })
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MapError {
    #[error("{what} #{index}: class {class} is not below the number of classes {classes}")]
    UnknownClass {
        what: &'static str,
        index: usize,
        class: usize,
        classes: usize,
    },
    #[error("detection #{index}: score {score} is not a number")]
    NanScore { index: usize, score: f32 },
    #[error("{what} #{index}: box {bbox:?} is not a finite [top, left, bottom, right] with top <= bottom and left <= right")]
    BadBox {
        what: &'static str,
        index: usize,
        bbox: [f32; 4],
    },
    #[error("IoU threshold {0} is not between 0 and 1")]
    BadThreshold(f64),
}

/// The devkit's IoU of two inclusive-pixel boxes, `None` when they do not
/// overlap (the devkit skips those ground truths).
pub fn voc_iou(a: [f32; 4], b: [f32; 4]) -> Option<f64> {
    let [a_top, a_left, a_bottom, a_right] = a.map(f64::from);
    let [b_top, b_left, b_bottom, b_right] = b.map(f64::from);
    let iw = a_right.min(b_right) - a_left.max(b_left) + 1.0;
    let ih = a_bottom.min(b_bottom) - a_top.max(b_top) + 1.0;
    if !(iw > 0.0 && ih > 0.0) {
        return None;
    }
    // The devkit's order of operations (detection first), so that results
    // agree to the last bit with a faithful port.
    let union = (a_right - a_left + 1.0) * (a_bottom - a_top + 1.0)
        + (b_right - b_left + 1.0) * (b_bottom - b_top + 1.0)
        - iw * ih;
    Some(iw * ih / union)
}

/// VOC 2007's 11-point interpolated AP of a curve given as parallel
/// `recall`/`precision` slices.
pub fn ap_voc07(recall: &[f64], precision: &[f64]) -> f64 {
    let mut ap = 0.0;
    for k in 0..=10 {
        let t = f64::from(k) / 10.0;
        let p = recall
            .iter()
            .zip(precision)
            .filter(|(&r, _)| r >= t)
            .map(|(_, &p)| p)
            .fold(None, |best: Option<f64>, p| {
                Some(best.map_or(p, |b| b.max(p)))
            })
            .unwrap_or(0.0);
        ap += p / 11.0;
    }
    ap
}

/// The all-point AP (VOC 2010 on) of a curve given as parallel
/// `recall`/`precision` slices, recall non-decreasing.
pub fn ap_all_points(recall: &[f64], precision: &[f64]) -> f64 {
    let mut mrec = Vec::with_capacity(recall.len() + 2);
    mrec.push(0.0);
    mrec.extend_from_slice(recall);
    mrec.push(1.0);
    let mut mpre = Vec::with_capacity(precision.len() + 2);
    mpre.push(0.0);
    mpre.extend_from_slice(precision);
    mpre.push(0.0);
    for i in (0..mpre.len() - 1).rev() {
        mpre[i] = mpre[i].max(mpre[i + 1]);
    }
    (0..mrec.len() - 1)
        .filter(|&i| mrec[i + 1] != mrec[i])
        .map(|i| (mrec[i + 1] - mrec[i]) * mpre[i + 1])
        .sum()
}

fn check_box(bbox: [f32; 4]) -> bool {
    let [top, left, bottom, right] = bbox;
    bbox.iter().all(|v| v.is_finite()) && top <= bottom && left <= right
}

/// Scores `detections` against `ground_truths` for classes `0..classes` at
/// `iou_threshold` ([`VOC_IOU_THRESHOLD`] for VOC), as described at the top
/// of this module.
pub fn evaluate(
    ground_truths: &[GroundTruth],
    detections: &[ScoredBox],
    classes: usize,
    iou_threshold: f64,
) -> Result<MeanAp, MapError> {
    if !(0.0..=1.0).contains(&iou_threshold) {
        return Err(MapError::BadThreshold(iou_threshold));
    }
    for (index, g) in ground_truths.iter().enumerate() {
        if g.class >= classes {
            return Err(MapError::UnknownClass {
                what: "ground truth",
                index,
                class: g.class,
                classes,
            });
        }
        if !check_box(g.bbox) {
            return Err(MapError::BadBox {
                what: "ground truth",
                index,
                bbox: g.bbox,
            });
        }
    }
    for (index, d) in detections.iter().enumerate() {
        if d.class >= classes {
            return Err(MapError::UnknownClass {
                what: "detection",
                index,
                class: d.class,
                classes,
            });
        }
        if d.score.is_nan() {
            return Err(MapError::NanScore {
                index,
                score: d.score,
            });
        }
        if !check_box(d.bbox) {
            return Err(MapError::BadBox {
                what: "detection",
                index,
                bbox: d.bbox,
            });
        }
    }

    let mut truths_by_class: Vec<Vec<&GroundTruth>> = vec![Vec::new(); classes];
    for g in ground_truths {
        truths_by_class[g.class].push(g);
    }
    let mut detections_by_class: Vec<Vec<&ScoredBox>> = vec![Vec::new(); classes];
    for d in detections {
        detections_by_class[d.class].push(d);
    }
    let per_class: Vec<ClassAp> = (0..classes)
        .map(|class| {
            evaluate_class(
                class,
                &truths_by_class[class],
                &detections_by_class[class],
                iou_threshold,
            )
        })
        .collect();

    let mean = |ap: fn(&ClassAp) -> Option<f64>| {
        let aps: Vec<f64> = per_class.iter().filter_map(ap).collect();
        (!aps.is_empty()).then(|| aps.iter().sum::<f64>() / aps.len() as f64)
    };
    Ok(MeanAp {
        map_voc07: mean(|c| c.ap_voc07),
        map_all_points: mean(|c| c.ap_all_points),
        classes: per_class,
    })
}

/// One class: `truths` and `detections` are all of this class (in input order).
fn evaluate_class(
    class: usize,
    truths: &[&GroundTruth],
    detections: &[&ScoredBox],
    iou_threshold: f64,
) -> ClassAp {
    // Per image: its ground truths of this class, and whether each is detected.
    let mut by_image: HashMap<usize, Vec<(&GroundTruth, bool)>> = HashMap::new();
    for &g in truths {
        by_image.entry(g.image).or_default().push((g, false));
    }
    let positives = truths.iter().filter(|g| !g.difficult).count();

    let mut order: Vec<&ScoredBox> = detections.to_vec();
    // Stable: equal scores keep the input order.
    order.sort_by(|a, b| b.score.total_cmp(&a.score));

    let (mut tp, mut fp, mut ignored) = (0usize, 0usize, 0usize);
    let mut curve = Vec::new();
    for d in order {
        let outcome = match by_image.get_mut(&d.image) {
            None => Outcome::FalsePositive,
            Some(image_truths) => {
                let mut best: Option<(usize, f64)> = None;
                for (j, (g, _)) in image_truths.iter().enumerate() {
                    if let Some(ov) = voc_iou(d.bbox, g.bbox) {
                        if best.is_none_or(|(_, b)| ov > b) {
                            best = Some((j, ov));
                        }
                    }
                }
                match best {
                    Some((j, ov)) if ov >= iou_threshold => {
                        let (g, detected) = &mut image_truths[j];
                        if g.difficult {
                            Outcome::Ignored
                        } else if !*detected {
                            *detected = true;
                            Outcome::TruePositive
                        } else {
                            Outcome::FalsePositive
                        }
                    }
                    _ => Outcome::FalsePositive,
                }
            }
        };
        match outcome {
            Outcome::TruePositive => tp += 1,
            Outcome::FalsePositive => fp += 1,
            Outcome::Ignored => {
                ignored += 1;
                continue;
            }
        }
        if positives > 0 {
            curve.push(PrPoint {
                score: d.score,
                recall: tp as f64 / positives as f64,
                precision: tp as f64 / (tp + fp) as f64,
            });
        }
    }
    let (ap_voc07_value, ap_all) = if positives > 0 {
        let recall: Vec<f64> = curve.iter().map(|p| p.recall).collect();
        let precision: Vec<f64> = curve.iter().map(|p| p.precision).collect();
        (
            Some(ap_voc07(&recall, &precision)),
            Some(ap_all_points(&recall, &precision)),
        )
    } else {
        (None, None)
    };
    let mut by_size = [SizeRecall::default(); 3];
    for (g, detected) in by_image.values().flatten() {
        if !g.difficult {
            let size = &mut by_size[ObjectSize::of(g.bbox) as usize];
            size.objects += 1;
            size.found += usize::from(*detected);
        }
    }
    ClassAp {
        class,
        positives,
        difficult: truths.len() - positives,
        true_positives: tp,
        false_positives: fp,
        ignored,
        ap_voc07: ap_voc07_value,
        ap_all_points: ap_all,
        curve,
        by_size,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [f32; 4] = [0.0, 0.0, 9.0, 9.0];
    const B: [f32; 4] = [100.0, 100.0, 149.0, 149.0];
    const NOWHERE: [f32; 4] = [300.0, 300.0, 309.0, 309.0];

    fn gt(image: usize, class: usize, bbox: [f32; 4]) -> GroundTruth {
        GroundTruth {
            image,
            class,
            bbox,
            difficult: false,
        }
    }

    fn difficult(image: usize, class: usize, bbox: [f32; 4]) -> GroundTruth {
        GroundTruth {
            difficult: true,
            ..gt(image, class, bbox)
        }
    }

    fn det(image: usize, class: usize, score: f32, bbox: [f32; 4]) -> ScoredBox {
        ScoredBox {
            image,
            class,
            score,
            bbox,
        }
    }

    /// Class 0's `(11-point, all-point)` APs.
    fn aps(truths: &[GroundTruth], detections: &[ScoredBox]) -> (Option<f64>, Option<f64>) {
        let result = evaluate(truths, detections, 1, VOC_IOU_THRESHOLD).unwrap();
        (result.classes[0].ap_voc07, result.classes[0].ap_all_points)
    }

    fn assert_aps(got: (Option<f64>, Option<f64>), want: (f64, f64)) {
        let (Some(a), Some(b)) = got else {
            panic!("no AP: {got:?}, want {want:?}");
        };
        assert!(
            (a - want.0).abs() < 1e-12 && (b - want.1).abs() < 1e-12,
            "got {got:?}, want {want:?}"
        );
    }

    #[test]
    fn voc_iou_counts_inclusive_pixels() {
        assert_eq!(voc_iou(A, A), Some(1.0));
        // 10 x 10 against its left half, 10 x 5: 50 / 100.
        assert_eq!(voc_iou(A, [0.0, 0.0, 9.0, 4.0]), Some(0.5));
        // Sharing one pixel column: 10 of 190.
        assert_eq!(voc_iou(A, [0.0, 9.0, 9.0, 18.0]), Some(10.0 / 190.0));
        // Adjacent without a shared pixel: no overlap.
        assert_eq!(voc_iou(A, [0.0, 10.0, 9.0, 19.0]), None);
        assert_eq!(voc_iou(A, NOWHERE), None);
    }

    #[test]
    fn perfect_detections_score_one() {
        let truths = [gt(0, 0, A), gt(0, 0, B), gt(1, 0, A)];
        let detections = [det(0, 0, 0.9, A), det(0, 0, 0.3, B), det(1, 0, 0.5, A)];
        assert_aps(aps(&truths, &detections), (1.0, 1.0));
    }

    #[test]
    fn one_true_positive_then_one_false_positive() {
        // P = 1: points (1, 1), (1, 0.5).
        let truths = [gt(0, 0, A)];
        let detections = [det(0, 0, 0.9, A), det(0, 0, 0.5, NOWHERE)];
        assert_aps(aps(&truths, &detections), (1.0, 1.0));
    }

    #[test]
    fn a_false_positive_first_halves_the_precision() {
        // P = 1: points (0, 0), (1, 0.5): every threshold sees 0.5.
        let truths = [gt(0, 0, A)];
        let detections = [det(0, 0, 0.9, NOWHERE), det(0, 0, 0.5, A)];
        assert_aps(aps(&truths, &detections), (0.5, 0.5));
    }

    #[test]
    fn true_false_true_with_two_objects() {
        // P = 2: points (0.5, 1), (0.5, 0.5), (1, 2/3).
        // 11-point: t = 0..0.5 -> 1 (6 of them), t = 0.6..1 -> 2/3 (5): 28/33.
        // All points: 0.5 * 1 + 0.5 * 2/3 = 5/6.
        let truths = [gt(0, 0, A), gt(1, 0, B)];
        let detections = [
            det(0, 0, 0.9, A),
            det(0, 0, 0.8, NOWHERE),
            det(1, 0, 0.7, B),
        ];
        assert_aps(aps(&truths, &detections), (28.0 / 33.0, 5.0 / 6.0));
        let result = evaluate(&truths, &detections, 1, VOC_IOU_THRESHOLD).unwrap();
        let c = &result.classes[0];
        assert_eq!((c.true_positives, c.false_positives, c.ignored), (2, 1, 0));
        let curve: Vec<(f32, f64, f64)> = c
            .curve
            .iter()
            .map(|p| (p.score, p.recall, p.precision))
            .collect();
        assert_eq!(
            curve,
            [(0.9, 0.5, 1.0), (0.8, 0.5, 0.5), (0.7, 1.0, 2.0 / 3.0)]
        );
    }

    #[test]
    fn ties_in_score_keep_the_input_order() {
        let truths = [gt(0, 0, A)];
        let hit_first = [det(0, 0, 0.5, A), det(0, 0, 0.5, NOWHERE)];
        assert_aps(aps(&truths, &hit_first), (1.0, 1.0));
        let miss_first = [det(0, 0, 0.5, NOWHERE), det(0, 0, 0.5, A)];
        assert_aps(aps(&truths, &miss_first), (0.5, 0.5));
        // The tie is broken by input order, not by anything else: a higher
        // score still goes first whatever its position.
        let miss_first_but_lower = [det(0, 0, 0.4, NOWHERE), det(0, 0, 0.5, A)];
        assert_aps(aps(&truths, &miss_first_but_lower), (1.0, 1.0));
    }

    #[test]
    fn no_detections_score_zero() {
        assert_aps(aps(&[gt(0, 0, A), gt(3, 0, B)], &[]), (0.0, 0.0));
        // Only misses: also 0.
        assert_aps(aps(&[gt(0, 0, A)], &[det(0, 0, 0.9, NOWHERE)]), (0.0, 0.0));
    }

    #[test]
    fn a_class_with_only_difficult_objects_has_no_ap_and_is_left_out_of_the_mean() {
        let truths = [
            gt(0, 0, A),
            gt(0, 1, B),
            difficult(1, 2, A),
            difficult(2, 2, B),
        ];
        let detections = [
            det(0, 0, 0.9, A),
            det(0, 1, 0.9, NOWHERE),
            det(0, 1, 0.8, B),
            det(1, 2, 0.9, A),       // on a difficult box: ignored
            det(1, 2, 0.8, NOWHERE), // a false positive, but AP is undefined
        ];
        let result = evaluate(&truths, &detections, 4, VOC_IOU_THRESHOLD).unwrap();
        let c2 = &result.classes[2];
        assert_eq!((c2.positives, c2.difficult), (0, 2));
        assert_eq!((c2.ap_voc07, c2.ap_all_points), (None, None));
        assert_eq!((c2.ignored, c2.false_positives), (1, 1));
        assert!(c2.curve.is_empty());
        // Class 3: no objects at all, no AP either.
        assert_eq!(result.classes[3].ap_voc07, None);
        // Mean over classes 0 (AP 1) and 1 (AP 0.5).
        for map in [result.map_voc07, result.map_all_points] {
            assert!(map.is_some_and(|m| (m - 0.75).abs() < 1e-12), "{map:?}");
        }
        // No class with positives: no mean.
        let only_difficult = evaluate(&truths[2..], &detections[3..], 4, 0.5).unwrap();
        assert_eq!(
            (only_difficult.map_voc07, only_difficult.map_all_points),
            (None, None)
        );
    }

    #[test]
    fn a_detection_on_a_difficult_box_is_ignored_not_counted_false() {
        let truths = [gt(0, 0, A), difficult(0, 0, B)];
        // Without the rule, the first would be a false positive: AP 0.5.
        let detections = [det(0, 0, 0.9, B), det(0, 0, 0.8, A), det(0, 0, 0.7, B)];
        assert_aps(aps(&truths, &detections), (1.0, 1.0));
        let result = evaluate(&truths, &detections, 1, 0.5).unwrap();
        assert_eq!(
            result.classes[0].ignored, 2,
            "a difficult box absorbs every detection"
        );
        assert_eq!(result.classes[0].curve.len(), 1);
        // Detecting only the difficult box: recall stays 0.
        assert_aps(aps(&truths, &detections[..1]), (0.0, 0.0));
    }

    #[test]
    fn objects_are_sized_by_their_inclusive_area_as_coco_does() {
        // 32 x 32 inclusive pixels is the first medium area; 96 x 96 the first large.
        assert_eq!(ObjectSize::of([0.0, 0.0, 31.0, 30.0]), ObjectSize::Small);
        assert_eq!(ObjectSize::of([0.0, 0.0, 31.0, 31.0]), ObjectSize::Medium);
        assert_eq!(ObjectSize::of([0.0, 0.0, 95.0, 94.0]), ObjectSize::Medium);
        assert_eq!(ObjectSize::of([0.0, 0.0, 95.0, 95.0]), ObjectSize::Large);
        // A thin box is small whatever its length.
        assert_eq!(ObjectSize::of([0.0, 0.0, 400.0, 1.0]), ObjectSize::Small);
    }

    #[test]
    fn found_objects_are_counted_by_size_difficult_ones_left_out() {
        let small = A; // 10 x 10
        let medium = B; // 50 x 50
        let large = [0.0, 0.0, 199.0, 199.0];
        let truths = [
            gt(0, 0, small),
            gt(0, 0, medium),
            gt(1, 0, small),
            gt(1, 1, large),
            difficult(2, 0, small),
        ];
        let detections = [
            det(0, 0, 0.9, medium),
            det(0, 0, 0.8, medium), // a duplicate: found once
            det(1, 0, 0.7, small),
            det(2, 0, 0.6, small), // on the difficult box: not counted
            det(1, 1, 0.5, NOWHERE),
        ];
        let result = evaluate(&truths, &detections, 2, VOC_IOU_THRESHOLD).unwrap();
        let count = |objects, found| SizeRecall { objects, found };
        assert_eq!(
            result.classes[0].by_size,
            [count(2, 1), count(1, 1), count(0, 0)]
        );
        assert_eq!(
            result.classes[1].by_size,
            [count(0, 0), count(0, 0), count(1, 0)]
        );
        let total = result.recall_by_size();
        assert_eq!(total, [count(2, 1), count(1, 1), count(1, 0)]);
        let recall: Vec<Option<f64>> = total.iter().map(|s| s.recall()).collect();
        assert_eq!(recall, [Some(0.5), Some(1.0), Some(0.0)]);
        assert_eq!(SizeRecall::default().recall(), None);
        // The found objects are the true positives.
        let found: usize = total.iter().map(|s| s.found).sum();
        let tp: usize = result.classes.iter().map(|c| c.true_positives).sum();
        assert_eq!(found, tp);
    }

    #[test]
    fn duplicate_detections_of_one_object_are_false_positives() {
        let truths = [gt(0, 0, A), gt(0, 0, B)];
        // A twice, then B: true, false, true -> the TP, FP, TP case.
        let nudged = [0.0, 1.0, 9.0, 10.0];
        let detections = [det(0, 0, 0.9, A), det(0, 0, 0.8, nudged), det(0, 0, 0.7, B)];
        assert_aps(aps(&truths, &detections), (28.0 / 33.0, 5.0 / 6.0));
    }

    #[test]
    fn only_the_best_overlapping_object_is_tried() {
        // The detection overlaps A best (already detected) and C enough:
        // the devkit counts it a duplicate of A, not a hit on C.
        let c = [0.0, 3.0, 9.0, 12.0];
        let truths = [gt(0, 0, A), gt(0, 0, c)];
        let between = [0.0, 1.0, 9.0, 10.0]; // IoU with A 90/110, with C 80/120
        let detections = [det(0, 0, 0.9, A), det(0, 0, 0.8, between)];
        let result = evaluate(&truths, &detections, 1, 0.5).unwrap();
        assert_eq!(result.classes[0].false_positives, 1);
        assert_eq!(result.classes[0].true_positives, 1);
    }

    #[test]
    fn iou_threshold_passes_at_exactly_one_half_and_other_images_and_classes_do_not_match() {
        let truths = [gt(0, 0, A)];
        assert_aps(
            aps(&truths, &[det(0, 0, 0.9, [0.0, 0.0, 9.0, 4.0])]),
            (1.0, 1.0),
        );
        assert_aps(
            aps(&truths, &[det(0, 0, 0.9, [0.0, 0.0, 9.0, 3.0])]),
            (0.0, 0.0),
        );
        assert_aps(aps(&truths, &[det(1, 0, 0.9, A)]), (0.0, 0.0));
        let result = evaluate(&truths, &[det(0, 1, 0.9, A)], 2, 0.5).unwrap();
        assert_eq!(result.classes[0].ap_voc07, Some(0.0));
        assert_eq!(result.classes[1].false_positives, 1);
    }

    #[test]
    fn eleven_point_thresholds_are_the_exact_tenths() {
        // 10 objects, 3 found first, then misses: recall reaches exactly 0.3,
        // which the t = 0.3 threshold counts (np.arange's 0.30000000000000004
        // would not).
        let truths: Vec<GroundTruth> = (0..10).map(|i| gt(i, 0, A)).collect();
        let mut detections: Vec<ScoredBox> = (0..3).map(|i| det(i, 0, 0.9, A)).collect();
        detections.push(det(0, 0, 0.1, NOWHERE));
        let (ap07, all) = aps(&truths, &detections);
        assert!((ap07.unwrap() - 4.0 / 11.0).abs() < 1e-12, "{ap07:?}");
        assert!((all.unwrap() - 0.3).abs() < 1e-12, "{all:?}");
    }

    #[test]
    fn ap_functions_on_given_curves() {
        assert_eq!(ap_all_points(&[], &[]), 0.0);
        assert_eq!(ap_voc07(&[], &[]), 0.0);
        // Precision rising later lifts the envelope of earlier recall.
        let (r, p) = ([0.25, 0.5, 0.75], [0.5, 0.4, 0.6]);
        assert!((ap_all_points(&r, &p) - 0.75 * 0.6).abs() < 1e-12);
        // t = 0..0.7 -> 0.6 (8 thresholds), 0.8..1 -> 0.
        assert!((ap_voc07(&r, &p) - 8.0 * 0.6 / 11.0).abs() < 1e-12);
    }

    #[test]
    fn bad_input_is_refused_naming_the_entry() {
        let truths = [gt(0, 0, A)];
        let err = evaluate(&truths, &[det(0, 5, 0.5, A)], 2, 0.5).unwrap_err();
        assert!(
            err.to_string().starts_with("detection #0: class 5"),
            "{err}"
        );
        let err = evaluate(&[gt(0, 2, A)], &[], 2, 0.5).unwrap_err();
        assert!(
            err.to_string().starts_with("ground truth #0: class 2"),
            "{err}"
        );
        let err = evaluate(
            &truths,
            &[det(0, 0, 0.5, A), det(0, 0, f32::NAN, A)],
            1,
            0.5,
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with("detection #1: score NaN"),
            "{err}"
        );
        let err = evaluate(&truths, &[det(0, 0, 0.5, [5.0, 0.0, 4.0, 9.0])], 1, 0.5).unwrap_err();
        assert!(err.to_string().contains("top <= bottom"), "{err}");
        let err = evaluate(&[gt(0, 0, [0.0, f32::INFINITY, 1.0, 1.0])], &[], 1, 0.5).unwrap_err();
        assert!(err.to_string().starts_with("ground truth #0: box"), "{err}");
        assert_eq!(
            evaluate(&truths, &[], 1, 1.5),
            Err(MapError::BadThreshold(1.5))
        );
    }
}
