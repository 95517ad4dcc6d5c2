//! Which rows of a CSV a grid shows: its first rows (the lesson's grids), or
//! the model's worst predictions, so that what it gets wrong is looked at.
//!
//! "Worst" is the highest loss, told from what a predictions CSV holds (the
//! predicted class's probability, not the true class's, and the IoU):
//! - classes: wrong predictions first, the most confident first (a confident
//!   wrong class has the highest cross-entropy), then right ones, the least
//!   confident first;
//! - boxes: the lowest IoU first;
//! - class and box: wrong classes first, the most confident first, then right
//!   ones, the lowest IoU first (the class loss carries 20 times the weight in
//!   the combined model's loss, so a wrong class outranks any box).
//!
//! Ties keep the CSV's order; a row without a number (an empty `prob` or
//! `iou`) comes last in its group, since nothing says it is bad.

use crate::artifacts::{BboxPrediction, ClassPrediction, CombinedPrediction};

/// Which rows a grid shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RowOrder {
    /// The CSV's first rows, in file order.
    #[default]
    First,
    /// The worst predictions first (prediction CSVs only); see the module docs.
    Worst,
}

/// A prediction row that can be ranked worst first.
pub trait WorstFirst {
    /// What the worst order sorts by, for captions: "worst 12 of 500 rows by ...".
    const CRITERION: &'static str;
    /// The sort key: `(group, value)`, smaller first.
    fn worst_key(&self) -> (u8, f32);
}

/// Groups of the worst order: wrong classes before right ones.
const WRONG: u8 = 0;
const RIGHT: u8 = 1;

/// `value` as a key where a missing number (NaN) sorts after every real one,
/// and -0.0 equals 0.0 (`total_cmp` would tell them apart).
fn nan_last(value: f32) -> f32 {
    if value.is_nan() {
        f32::INFINITY
    } else {
        value + 0.0
    }
}

/// Wrong classes most confident first, then right ones least confident first.
fn class_key(category: &str, true_category: &str, prob: f32) -> (u8, f32) {
    if category == true_category {
        (RIGHT, nan_last(prob))
    } else {
        (WRONG, nan_last(-prob))
    }
}

impl WorstFirst for ClassPrediction {
    const CRITERION: &'static str =
        "loss (wrong classes, most confident first, then right ones, least confident first)";
    fn worst_key(&self) -> (u8, f32) {
        class_key(&self.category, &self.true_category, self.prob)
    }
}

impl WorstFirst for BboxPrediction {
    const CRITERION: &'static str = "IoU (lowest first)";
    fn worst_key(&self) -> (u8, f32) {
        (RIGHT, nan_last(self.iou))
    }
}

impl WorstFirst for CombinedPrediction {
    const CRITERION: &'static str =
        "loss (wrong classes, most confident first, then right ones, lowest IoU first)";
    fn worst_key(&self) -> (u8, f32) {
        if self.category == self.true_category {
            (RIGHT, nan_last(self.iou))
        } else {
            class_key(&self.category, &self.true_category, self.prob)
        }
    }
}

/// `rows` sorted worst first; a stable sort, so ties keep the CSV's order.
pub fn worst_first<T: WorstFirst>(mut rows: Vec<T>) -> Vec<T> {
    rows.sort_by(|a, b| {
        let ((group_a, value_a), (group_b, value_b)) = (a.worst_key(), b.worst_key());
        group_a.cmp(&group_b).then(value_a.total_cmp(&value_b))
    });
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, category: &str, true_category: &str, prob: f32) -> ClassPrediction {
        ClassPrediction {
            file_name: name.into(),
            category: category.into(),
            true_category: true_category.into(),
            prob,
        }
    }

    fn names<T>(rows: &[T], name: impl Fn(&T) -> &str) -> Vec<&str> {
        rows.iter().map(name).collect()
    }

    #[test]
    fn classes_wrong_most_confident_first_then_right_least_confident_first() {
        let rows = vec![
            class("right_sure", "car", "car", 0.95),
            class("wrong_unsure", "dog", "cat", 0.40),
            class("right_unsure", "car", "car", 0.35),
            class("wrong_sure", "dog", "cat", 0.90),
            class("wrong_no_prob", "dog", "cat", f32::NAN),
            class("wrong_unsure_tie", "cow", "horse", 0.40),
            class("right_zero", "car", "car", 0.0),
        ];
        let sorted = worst_first(rows);
        assert_eq!(
            names(&sorted, |r| &r.file_name),
            [
                "wrong_sure",
                "wrong_unsure",
                "wrong_unsure_tie",
                "wrong_no_prob",
                "right_zero",
                "right_unsure",
                "right_sure"
            ]
        );
    }

    #[test]
    fn boxes_lowest_iou_first_ties_in_csv_order() {
        let bbox = |name: &str, iou: f32| BboxPrediction {
            file_name: name.into(),
            bbox: [0.0, 0.0, 10.0, 10.0],
            true_bbox: [0.0, 0.0, 10.0, 10.0],
            iou,
        };
        let rows = vec![
            bbox("a", 0.8),
            bbox("no_iou", f32::NAN),
            bbox("b", 0.1),
            bbox("c", 0.5),
            bbox("d", 0.1),
            bbox("e", 0.0),
        ];
        let sorted = worst_first(rows);
        assert_eq!(
            names(&sorted, |r| &r.file_name),
            ["e", "b", "d", "c", "a", "no_iou"]
        );
    }

    #[test]
    fn combined_wrong_classes_by_confidence_then_lowest_iou() {
        let combined = |name: &str, category: &str, prob: f32, iou: f32| CombinedPrediction {
            file_name: name.into(),
            category: category.into(),
            true_category: "cat".into(),
            prob,
            bbox: [0.0, 0.0, 10.0, 10.0],
            true_bbox: [0.0, 0.0, 10.0, 10.0],
            iou,
        };
        let rows = vec![
            combined("right_good_box", "cat", 0.2, 0.9),
            combined("wrong_unsure_good_box", "dog", 0.3, 0.95),
            combined("right_bad_box", "cat", 0.99, 0.05),
            combined("wrong_sure", "dog", 0.8, 0.6),
            combined("right_middling_box", "cat", 0.5, 0.5),
        ];
        let sorted = worst_first(rows);
        assert_eq!(
            names(&sorted, |r| &r.file_name),
            [
                "wrong_sure",
                "wrong_unsure_good_box",
                "right_bad_box",
                "right_middling_box",
                "right_good_box"
            ]
        );
    }
}
