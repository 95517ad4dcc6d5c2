//! Which anchor predicts which ground-truth object, and the activation that
//! turns an anchor's four box outputs into a box.
//!
//! # Matching (the lesson's `map_to_ground_truth`)
//!
//! ```python
//! overlaps = jaccard(bbox, anchor_cnr)          # ground truths x anchors
//! prior_overlap, prior_idx = overlaps.max(1)    # each ground truth's best anchor
//! gt_overlap, gt_idx = overlaps.max(0)          # each anchor's best ground truth
//! gt_overlap[prior_idx] = 1.99
//! for i, o in enumerate(prior_idx): gt_idx[o] = i
//! pos = gt_overlap > 0.4
//! ```
//!
//! 1. Each ground truth claims the anchor it overlaps most, whatever the IoU
//!    (so every object is predicted by at least one anchor). When two claim
//!    the same anchor, the later ground truth (in annotation order) gets it,
//!    as the lesson's loop assigns in order.
//! 2. Every other anchor takes the ground truth it overlaps most, if that
//!    IoU is above the threshold (strictly, 0.4 in the lesson); else it is
//!    background.
//!
//! Ties in a maximum go to the first index (the lowest anchor, the earliest
//! ground truth). Torch does not promise which index its `max` returns among
//! equals, so this is our choice, stated rather than inherited.
//!
//! # The offset activation (the lesson's `actn_to_bb`)
//!
//! ```python
//! def actn_to_bb(actn, anchors):
//!     actn_bbs = torch.tanh(actn)
//!     actn_centers = (actn_bbs[:,:2]/2 * grid_sizes) + anchors[:,:2]
//!     actn_hw = (actn_bbs[:,2:]/2+1) * anchors[:,2:]
//!     return hw2corners(actn_centers, actn_hw)
//! ```
//!
//! With `t = tanh(activation)` in `(-1, 1)`:
//!
//! * `centre = anchor_centre + t[0..2] / 2 * grid_size`: the centre moves by
//!   up to half a grid *cell* (`1/g`, the lesson's `grid_sizes`; not half the
//!   anchor's own size, which differs from the cell by the zoom and ratio);
//! * `size = anchor_size * (t[2..4] / 2 + 1)`: between 0.5 and 1.5 times the
//!   anchor's height and width;
//! * corners `[centre - size / 2, centre + size / 2]`.
//!
//! The lesson has no inverse. [`box_to_offsets`] inverts the part after the
//! `tanh` exactly (up to `f32` rounding), and gives values outside `(-1, 1)`
//! for boxes the anchor cannot reach; `atanh` of it is the activation.

use crate::anchors::Anchor;
use crate::boxes::{centre_size_to_corners, corners_to_centre_size, iou, CentreSize, Corners};

/// The lesson's `jaccard(ground_truth, anchors)`: IoU of every ground truth
/// (rows) with every anchor (columns). The fields are private so that the
/// shape always agrees with the values.
#[derive(Debug, Clone, PartialEq)]
pub struct IouMatrix {
    ground_truths: usize,
    anchors: usize,
    /// Row-major: `values[g * anchors + a]`.
    values: Vec<f32>,
}

impl IouMatrix {
    pub fn new(ground_truth: &[Corners], anchors: &[Corners]) -> Self {
        let mut values = Vec::with_capacity(ground_truth.len() * anchors.len());
        for &g in ground_truth {
            values.extend(anchors.iter().map(|&a| iou(g, a)));
        }
        IouMatrix {
            ground_truths: ground_truth.len(),
            anchors: anchors.len(),
            values,
        }
    }

    /// A matrix from row-major values (e.g. computed elsewhere); `None` when
    /// `values` does not hold `ground_truths * anchors` of them.
    pub fn from_values(ground_truths: usize, anchors: usize, values: Vec<f32>) -> Option<Self> {
        (ground_truths.checked_mul(anchors) == Some(values.len())).then_some(IouMatrix {
            ground_truths,
            anchors,
            values,
        })
    }

    pub fn ground_truths(&self) -> usize {
        self.ground_truths
    }

    pub fn anchors(&self) -> usize {
        self.anchors
    }

    /// Row-major: `values()[g * anchors + a]`.
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Ground truth `g`'s IoU with every anchor; panics if `g` is out of range.
    pub fn row(&self, g: usize) -> &[f32] {
        &self.values[g * self.anchors..(g + 1) * self.anchors]
    }
}

/// What each anchor is to predict.
#[derive(Debug, Clone, PartialEq)]
pub struct Matching {
    /// Per anchor: the index of its ground truth, or `None` for background.
    pub assigned: Vec<Option<usize>>,
    /// Per anchor: its IoU with the assigned ground truth, or, for a
    /// background anchor, with its best one (0 when there is none).
    pub overlap: Vec<f32>,
    /// Per anchor: claimed by a ground truth as its best anchor (step 1),
    /// whatever the IoU (the lesson marks these with 1.99).
    pub claimed: Vec<bool>,
}

impl Matching {
    /// Per anchor: the class of its ground truth, or `background` (the
    /// lesson's `len(id2cat)`, one past the last class).
    pub fn class_targets(&self, ground_truth_classes: &[usize], background: usize) -> Vec<usize> {
        self.assigned
            .iter()
            .map(|a| a.map_or(background, |g| ground_truth_classes[g]))
            .collect()
    }

    /// The anchors that predict an object (the lesson's `pos_idx`).
    pub fn positive_anchors(&self) -> Vec<usize> {
        (0..self.assigned.len())
            .filter(|&a| self.assigned[a].is_some())
            .collect()
    }
}

/// The lesson's `map_to_ground_truth` plus its threshold (see the module doc).
pub fn map_to_ground_truth(overlaps: &IouMatrix, threshold: f32) -> Matching {
    let (ground_truths, anchors) = (overlaps.ground_truths, overlaps.anchors);
    if ground_truths == 0 {
        return Matching {
            assigned: vec![None; anchors],
            overlap: vec![0.0; anchors],
            claimed: vec![false; anchors],
        };
    }
    let row = |g: usize| overlaps.row(g);

    // Each anchor's best ground truth (first among equals).
    let mut best_gt = vec![0usize; anchors];
    let mut overlap = row(0).to_vec();
    for g in 1..ground_truths {
        for (a, &o) in row(g).iter().enumerate() {
            if o > overlap[a] {
                overlap[a] = o;
                best_gt[a] = g;
            }
        }
    }
    let mut assigned: Vec<Option<usize>> = best_gt
        .iter()
        .zip(&overlap)
        .map(|(&g, &o)| (o > threshold).then_some(g))
        .collect();

    // Each ground truth claims its best anchor (first among equals); later
    // ground truths overwrite earlier ones, as the lesson's loop does.
    let mut claimed = vec![false; anchors];
    for g in 0..ground_truths {
        let Some(best_anchor) = first_argmax(row(g)) else {
            continue;
        };
        assigned[best_anchor] = Some(g);
        overlap[best_anchor] = row(g)[best_anchor];
        claimed[best_anchor] = true;
    }
    Matching {
        assigned,
        overlap,
        claimed,
    }
}

/// Index of the first largest value; `None` for an empty slice.
fn first_argmax(values: &[f32]) -> Option<usize> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in values.iter().enumerate() {
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i)
}

/// The lesson's `actn_to_bb` for one anchor: four raw activations to a box
/// (see the module doc for the formula).
pub fn activations_to_box(activations: [f32; 4], anchor: &Anchor) -> Corners {
    offsets_to_box(activations.map(f32::tanh), anchor)
}

/// [`activations_to_box`] after the `tanh`: `offsets` in `[-1, 1]`.
pub fn offsets_to_box(offsets: [f32; 4], anchor: &Anchor) -> Corners {
    let CentreSize { centre, size } = anchor.centre_size;
    let g = anchor.grid_size;
    centre_size_to_corners(CentreSize {
        centre: [
            offsets[0] / 2.0 * g + centre[0],
            offsets[1] / 2.0 * g + centre[1],
        ],
        size: [
            (offsets[2] / 2.0 + 1.0) * size[0],
            (offsets[3] / 2.0 + 1.0) * size[1],
        ],
    })
}

/// The inverse of [`offsets_to_box`]: the offsets (`tanh` outputs) that put
/// `target` on `anchor`. Components outside `(-1, 1)` mean the anchor cannot
/// reach the box (its centre is more than half a cell away, or its size is
/// not within 0.5..1.5 of the anchor's).
pub fn box_to_offsets(target: Corners, anchor: &Anchor) -> [f32; 4] {
    let CentreSize { centre, size } = corners_to_centre_size(target);
    let anchor_cs = anchor.centre_size;
    let g = anchor.grid_size;
    [
        (centre[0] - anchor_cs.centre[0]) / g * 2.0,
        (centre[1] - anchor_cs.centre[1]) / g * 2.0,
        (size[0] / anchor_cs.size[0] - 1.0) * 2.0,
        (size[1] / anchor_cs.size[1] - 1.0) * 2.0,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anchors::{AnchorParams, Anchors};

    fn matrix(ground_truths: usize, values: &[f32]) -> IouMatrix {
        IouMatrix::from_values(ground_truths, values.len() / ground_truths, values.to_vec())
            .unwrap()
    }

    /// The anchors of a 2x2 grid, one square anchor per cell (zoom 1).
    fn two_by_two() -> Anchors {
        Anchors::new(&AnchorParams {
            grids: vec![2],
            zooms: vec![1.0],
            ratios: vec![[1.0, 1.0]],
        })
        .unwrap()
    }

    #[test]
    fn iou_matrix_is_ground_truths_by_anchors() {
        let anchors = two_by_two().corners();
        let gt = [[0.0, 0.0, 0.5, 0.5], [0.0, 0.25, 0.5, 0.75]];
        let m = IouMatrix::new(&gt, &anchors);
        assert_eq!(
            (m.ground_truths(), m.anchors(), m.values().len()),
            (2, 4, 8)
        );
        assert_eq!(m.row(0), [1.0, 0.0, 0.0, 0.0]);
        // Half of the top-left cell and half of the top-right: 1/3 each.
        assert_eq!(m.row(1), [1.0 / 3.0, 1.0 / 3.0, 0.0, 0.0]);
        assert!(IouMatrix::new(&[], &anchors).values().is_empty());
        assert_eq!(IouMatrix::from_values(2, 3, vec![0.0; 5]), None);
    }

    #[test]
    fn each_ground_truth_claims_its_best_anchor_and_others_need_the_threshold() {
        // 2 ground truths x 5 anchors.
        #[rustfmt::skip]
        let overlaps = [
            0.9, 0.5, 0.3, 0.1, 0.0,
            0.8, 0.45, 0.35, 0.0, 0.2,
        ];
        let m = map_to_ground_truth(&matrix(2, &overlaps), 0.4);
        // gt 0 claims anchor 0; gt 1's best is also anchor 0 and, being later,
        // takes it. Anchor 1: best gt 0 at 0.5 > 0.4. Anchor 2: 0.35, background.
        assert_eq!(m.assigned, [Some(1), Some(0), None, None, None]);
        assert_eq!(m.overlap, [0.8, 0.5, 0.35, 0.1, 0.2]);
        assert_eq!(m.claimed, [true, false, false, false, false]);
        assert_eq!(m.positive_anchors(), [0, 1]);
        assert_eq!(m.class_targets(&[7, 3], 20), [3, 7, 20, 20, 20]);
    }

    #[test]
    fn a_claimed_anchor_is_positive_below_the_threshold_and_the_threshold_is_strict() {
        let overlaps = [0.1, 0.4, 0.05];
        let m = map_to_ground_truth(&matrix(1, &overlaps), 0.4);
        // Its best anchor (1) is claimed although 0.4 is not above 0.4.
        assert_eq!(m.assigned, [None, Some(0), None]);
        let overlaps = [0.4, 0.4, 0.0, 0.3];
        let m = map_to_ground_truth(&matrix(1, &overlaps), 0.35);
        // Tie for best anchor: the first is claimed; the other passes 0.35 anyway.
        assert_eq!(m.assigned, [Some(0), Some(0), None, None]);
        assert_eq!(m.claimed, [true, false, false, false]);
    }

    #[test]
    fn ties_between_ground_truths_go_to_the_first() {
        #[rustfmt::skip]
        let overlaps = [
            0.9, 0.6, 0.0,
            0.0, 0.6, 0.9,
        ];
        let m = map_to_ground_truth(&matrix(2, &overlaps), 0.5);
        assert_eq!(m.assigned, [Some(0), Some(0), Some(1)]);
    }

    #[test]
    fn no_ground_truth_means_no_anchor_assigned() {
        let anchors = two_by_two().corners();
        let m = map_to_ground_truth(&IouMatrix::new(&[], &anchors), 0.4);
        assert_eq!(m.assigned, [None; 4]);
        assert!(m.positive_anchors().is_empty());
    }

    #[test]
    fn matching_real_boxes_on_the_lessons_anchors() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        let corners = anchors.corners();
        // A box exactly on the 1x1 grid's zoom-1 square anchor, and a small
        // one exactly on the 4x4 grid's cell (2, 1) zoom-1 square anchor.
        let big = anchors.anchors[anchors.index(2, 0, 0, 3).unwrap()].corners;
        let small_at = anchors.index(0, 2, 1, 3).unwrap();
        let small = anchors.anchors[small_at].corners;
        let overlaps = IouMatrix::new(&[big, small], &corners);
        let m = map_to_ground_truth(&overlaps, 0.4);
        assert_eq!(m.assigned[anchors.index(2, 0, 0, 3).unwrap()], Some(0));
        assert_eq!(m.assigned[small_at], Some(1));
        assert_eq!(m.overlap[small_at], 1.0);
        // Every positive anchor overlaps its ground truth above 0.4 or was claimed.
        for a in m.positive_anchors() {
            assert!(m.overlap[a] > 0.4 || m.claimed[a], "anchor {a}");
        }
        // The 1x1 zoom-0.7 anchor overlaps the big box by 0.49 and is positive too.
        assert_eq!(m.assigned[anchors.index(2, 0, 0, 0).unwrap()], Some(0));
    }

    #[test]
    fn zero_activations_give_the_anchor_and_the_range_is_half_a_cell_and_half_a_size() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        let a = anchors.anchors[1]; // 4x4 cell (0, 0), zoom 0.7, ratio (1, 0.5)
        assert_eq!(activations_to_box([0.0; 4], &a), a.corners);
        // tanh -> 1: the centre moves by half a cell (0.125), the size x 1.5.
        let far = offsets_to_box([1.0, -1.0, 1.0, -1.0], &a);
        let cs = corners_to_centre_size(far);
        let close = |x: f32, y: f32| (x - y).abs() < 1e-6;
        assert!(close(cs.centre[0], 0.125 + 0.125), "{cs:?}");
        assert!(close(cs.centre[1], 0.125 - 0.125), "{cs:?}");
        assert!(close(cs.size[0], 0.175 * 1.5), "{cs:?}");
        assert!(close(cs.size[1], 0.0875 * 0.5), "{cs:?}");
        // Large activations saturate at that range.
        let saturated = activations_to_box([50.0, -50.0, 50.0, -50.0], &a);
        for (s, f) in saturated.iter().zip(far) {
            assert!(close(*s, f), "{saturated:?} vs {far:?}");
        }
    }

    #[test]
    fn activations_to_box_is_the_lessons_formula() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        let a = anchors.anchors[150];
        let act = [0.3f32, -1.2, 0.7, -0.1];
        let t = act.map(f32::tanh);
        let (c, s, g) = (a.centre_size.centre, a.centre_size.size, a.grid_size);
        let (cy, cx) = (t[0] / 2.0 * g + c[0], t[1] / 2.0 * g + c[1]);
        let (h, w) = ((t[2] / 2.0 + 1.0) * s[0], (t[3] / 2.0 + 1.0) * s[1]);
        assert_eq!(
            activations_to_box(act, &a),
            [cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0]
        );
    }

    #[test]
    fn box_to_offsets_inverts_offsets_to_box() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        for (n, offsets) in [
            (0, [0.0, 0.0, 0.0, 0.0]),
            (17, [0.5, -0.25, 0.9, -0.9]),
            (150, [-0.99, 0.99, -0.5, 0.3]),
            (188, [0.1, 0.2, 0.3, 0.4]),
        ] {
            let a = anchors.anchors[n];
            let back = box_to_offsets(offsets_to_box(offsets, &a), &a);
            for (x, y) in back.iter().zip(offsets) {
                assert!((x - y).abs() < 1e-5, "anchor {n}: {back:?} vs {offsets:?}");
            }
            // And the activation that produces the box, through atanh.
            let act = back.map(f32::atanh);
            let again = activations_to_box(act, &a);
            let want = offsets_to_box(offsets, &a);
            for (x, y) in again.iter().zip(want) {
                assert!((x - y).abs() < 1e-5, "anchor {n}: {again:?} vs {want:?}");
            }
        }
        // A box twice the anchor's size is out of reach: offset 2 > 1.
        let a = anchors.anchors[3];
        let cs = a.centre_size;
        let twice = centre_size_to_corners(CentreSize {
            centre: cs.centre,
            size: [cs.size[0] * 2.0, cs.size[1]],
        });
        assert_eq!(box_to_offsets(twice, &a)[2], 2.0);
    }
}
