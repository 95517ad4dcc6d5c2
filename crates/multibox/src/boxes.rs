//! Box geometry shared by anchors, matching and NMS: the lesson's
//! `hw2corners` and `jaccard`, on boxes as continuous rectangles.
//!
//! Boxes here are `[top, left, bottom, right]` like everywhere in the project,
//! but *continuous*: the area is `(bottom - top) * (right - left)`, the
//! lesson's `box_sz`, with no `+ 1` for inclusive pixels. That is what the
//! lesson uses on its `0..1` coordinates. VOC's evaluation counts inclusive
//! pixels instead; `map.rs` has its own IoU for that.

/// `[top, left, bottom, right]`, continuous.
pub type Corners = [f32; 4];

/// A box as its centre `[row, column]` and size `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CentreSize {
    pub centre: [f32; 2],
    pub size: [f32; 2],
}

/// The lesson's `hw2corners(ctr, hw)`: `[ctr - hw / 2, ctr + hw / 2]`.
pub fn centre_size_to_corners(b: CentreSize) -> Corners {
    let [cy, cx] = b.centre;
    let [h, w] = b.size;
    [cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0]
}

/// The reverse of [`centre_size_to_corners`] (the fastai `bb_hw` idea on
/// continuous boxes): centre `(top + bottom) / 2`, size `bottom - top`.
pub fn corners_to_centre_size(c: Corners) -> CentreSize {
    let [top, left, bottom, right] = c;
    CentreSize {
        centre: [(top + bottom) / 2.0, (left + right) / 2.0],
        size: [bottom - top, right - left],
    }
}

/// The lesson's `box_sz`; an inverted box has no area.
pub fn area(c: Corners) -> f32 {
    (c[2] - c[0]).max(0.0) * (c[3] - c[1]).max(0.0)
}

/// The lesson's `jaccard` for one pair: intersection over union of two
/// continuous boxes. Two boxes without area give 0, not NaN (the lesson
/// would divide 0 by 0), so that a degenerate box matches nothing.
pub fn iou(a: Corners, b: Corners) -> f32 {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_and_centre_size_are_inverse() {
        let b = CentreSize {
            centre: [0.125, 0.375],
            size: [0.25, 0.5],
        };
        assert_eq!(centre_size_to_corners(b), [0.0, 0.125, 0.25, 0.625]);
        assert_eq!(corners_to_centre_size([0.0, 0.125, 0.25, 0.625]), b);
    }

    #[test]
    fn iou_of_known_pairs() {
        let unit = [0.0, 0.0, 1.0, 1.0];
        assert_eq!(iou(unit, unit), 1.0);
        // Half overlapping along one axis: inter 0.5, union 1.5.
        assert_eq!(iou(unit, [0.0, 0.5, 1.0, 1.5]), 1.0 / 3.0);
        // A quarter box inside: inter 0.25, union 1.
        assert_eq!(iou(unit, [0.0, 0.0, 0.5, 0.5]), 0.25);
        // Touching edges only, and disjoint.
        assert_eq!(iou(unit, [1.0, 0.0, 2.0, 1.0]), 0.0);
        assert_eq!(iou(unit, [3.0, 3.0, 4.0, 4.0]), 0.0);
        // Degenerate boxes: no NaN.
        assert_eq!(iou([0.5, 0.5, 0.5, 0.5], [0.5, 0.5, 0.5, 0.5]), 0.0);
        assert_eq!(iou([0.0, 0.0, 0.0, 1.0], unit), 0.0);
        // Symmetric.
        let (a, b) = ([0.1, 0.2, 0.7, 0.9], [0.3, 0.1, 0.8, 0.6]);
        assert_eq!(iou(a, b), iou(b, a));
    }

    #[test]
    fn area_of_inverted_box_is_zero() {
        assert_eq!(area([0.0, 0.0, 2.0, 3.0]), 6.0);
        assert_eq!(area([2.0, 0.0, 1.0, 3.0]), 0.0);
    }
}
