//! The next lesson's single-shot multibox detector (SSD) on the head's output
//! (`model_zoo::SsdHead`): its loss and its decoding into detections.
//!
//! The loss is the lesson's `ssd_loss`, summed over the images of a batch:
//!
//! ```python
//! def ssd_1_loss(b_c, b_bb, bbox, clas):
//!     a_ic = actn_to_bb(b_bb, anchors)
//!     gt_overlap, gt_idx = map_to_ground_truth(jaccard(bbox, anchor_cnr))
//!     gt_clas = clas[gt_idx]; pos = gt_overlap > 0.4
//!     gt_clas[1 - pos] = len(id2cat)                      # background
//!     loc_loss = (a_ic[pos_idx] - bbox[gt_idx][pos_idx]).abs().mean()
//!     clas_loss = loss_f(b_c, gt_clas)                    # focal BCE / num classes
//!     return loc_loss, clas_loss
//! ```
//!
//! Matching, anchors and the offset activation are `multibox`'s (no tch, unit
//! tested there); this module is their tensor side. The activation is written
//! again here in tensors because the loss needs its gradient; a test holds it
//! equal to `multibox::matching::activations_to_box`, which decoding uses.

use multibox::anchors::Anchors;
use multibox::boxes::Corners;
use multibox::matching::{activations_to_box, map_to_ground_truth, IouMatrix};
use multibox::nms::{detect, sigmoid, DecodeError, Detection, NmsParams};
use pipeline::params::SsdBoxLoss;
use tch::{Device, Kind, Tensor};

/// The lesson's matching threshold: an anchor whose best IoU with an object
/// is above it predicts that object.
pub const LESSON_MATCH_THRESHOLD: f32 = 0.4;

/// Focal loss (Lin et al. 2017): binary cross-entropy weighted by
/// `alpha_t * (1 - p_t)^gamma`, so that the many easy background anchors do
/// not drown the few objects. The paper's and the issue's alpha 0.25,
/// gamma 2 (the lesson's notebook ends with gamma 1).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Focal {
    pub alpha: f64,
    pub gamma: f64,
}

impl Default for Focal {
    fn default() -> Self {
        Focal {
            alpha: 0.25,
            gamma: 2.0,
        }
    }
}

/// How the loss weighs its parts and matches anchors.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SsdLossParams {
    /// An anchor whose best IoU with an object is above this predicts it.
    pub match_threshold: f32,
    pub focal: Focal,
    /// Factor on the box loss. The lesson adds the two parts as they are (1);
    /// on the synthetic test set that leaves the boxes loose (mAP@0.5 0.62,
    /// 0.07 at IoU 0.7), while 10 gives 0.87 (0.46 at IoU 0.7): the L1 of
    /// `0..1` boxes is small beside the summed class loss.
    pub box_weight: f64,
    /// What the box part measures: the lesson's L1 in image units, or in units
    /// of each anchor's side.
    pub box_loss: SsdBoxLoss,
}

impl Default for SsdLossParams {
    /// The lesson's loss.
    fn default() -> Self {
        SsdLossParams {
            match_threshold: LESSON_MATCH_THRESHOLD,
            focal: Focal::default(),
            box_weight: 1.0,
            box_loss: SsdBoxLoss::L1,
        }
    }
}

/// One image's objects: boxes in `0..1` units of the square input
/// (`[top, left, bottom, right]`, the lesson's `bbox / sz`) and their class
/// indices (`0..classes`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImageObjects {
    pub boxes: Vec<Corners>,
    pub classes: Vec<usize>,
}

/// The detector's anchors, classes and loss settings.
pub struct Ssd {
    anchors: Anchors,
    classes: usize,
    params: SsdLossParams,
    /// `[A, 2]` centres, `[A, 2]` sizes and `[A, 1]` cell sides, on the CPU
    /// (moved to the output's device when used).
    centres: Tensor,
    sizes: Tensor,
    grid_sizes: Tensor,
}

impl Ssd {
    pub fn new(anchors: Anchors, classes: usize, params: SsdLossParams) -> Self {
        let column = |f: &dyn Fn(&multibox::anchors::Anchor) -> Vec<f32>, width: i64| {
            let values: Vec<f32> = anchors.anchors.iter().flat_map(f).collect();
            Tensor::from_slice(&values).view([-1, width])
        };
        let centres = column(&|a| a.centre_size.centre.to_vec(), 2);
        let sizes = column(&|a| a.centre_size.size.to_vec(), 2);
        let grid_sizes = column(&|a| vec![a.grid_size], 1);
        Ssd {
            anchors,
            classes,
            params,
            centres,
            sizes,
            grid_sizes,
        }
    }

    pub fn anchors(&self) -> &Anchors {
        &self.anchors
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Width of each anchor's output row: 4 box activations, the classes and
    /// background.
    pub fn columns(&self) -> usize {
        4 + self.classes + 1
    }

    /// The lesson's `actn_to_bb` on a batch: `[N, A, 4]` activations to
    /// `[N, A, 4]` corners in `0..1` units.
    pub fn activations_to_boxes(&self, activations: &Tensor) -> Tensor {
        let device = activations.device();
        let t = activations.tanh();
        let centres = t.narrow(-1, 0, 2) / 2.0 * self.grid_sizes.to_device(device)
            + self.centres.to_device(device);
        let sizes = (t.narrow(-1, 2, 2) / 2.0 + 1.0) * self.sizes.to_device(device);
        Tensor::cat(&[&centres - &sizes / 2.0, &centres + &sizes / 2.0], -1)
    }

    /// The lesson's `ssd_loss` (with the box part weighted by
    /// `box_weight`) of a batch's output `[N, A, 4 + classes + 1]`
    /// against its objects (one entry per image): per image, the mean L1 of
    /// the matched anchors' boxes (`0..1` units) plus the focal loss of every
    /// anchor's classes divided by the number of classes; summed over the
    /// batch. An image without objects (all cropped away) adds only its
    /// background class loss.
    pub fn loss(&self, output: &Tensor, objects: &[ImageObjects]) -> Tensor {
        let (loc_loss, class_loss) = self.loss_parts(output, objects);
        self.weighted_loss(loc_loss, class_loss)
    }

    /// [`Ssd::loss`] from its two parts ([`Ssd::loss_parts`]), as tensors or
    /// as numbers (validation, which needs the parts too, matches only once).
    pub fn weighted_loss<T>(&self, box_loss: T, class_loss: T) -> T
    where
        T: std::ops::Mul<f64, Output = T> + std::ops::Add<Output = T>,
    {
        box_loss * self.params.box_weight + class_loss
    }

    /// The two parts of [`Ssd::loss`], unweighted: the box L1 and the class
    /// focal loss; of an output of several passes ([`Ssd::merge_mirrored`]),
    /// the mean of the passes' parts.
    pub fn loss_parts(&self, output: &Tensor, objects: &[ImageObjects]) -> (Tensor, Tensor) {
        let passes = output.size()[1] / self.anchors.len() as i64;
        if passes > 1 {
            let parts = output
                .chunk(passes, 1)
                .iter()
                .map(|pass| self.loss_parts(pass, objects))
                .reduce(|(l1, c1), (l2, c2)| (l1 + l2, c1 + c2))
                .expect("at least one pass");
            return (parts.0 / passes as f64, parts.1 / passes as f64);
        }
        let device = output.device();
        let (n, a) = (output.size()[0], self.anchors.len());
        assert_eq!(n as usize, objects.len(), "one object list per image");
        let anchor_corners = self.anchors.corners();
        let mut target_classes = Vec::with_capacity(n as usize * a);
        let mut target_boxes = Vec::with_capacity(n as usize * a * 4);
        let mut positive = Vec::with_capacity(n as usize * a);
        for image in objects {
            let matching = map_to_ground_truth(
                &IouMatrix::new(&image.boxes, &anchor_corners),
                self.params.match_threshold,
            );
            target_classes.extend(
                matching
                    .class_targets(&image.classes, self.classes)
                    .into_iter()
                    .map(|c| c as i64),
            );
            for assigned in &matching.assigned {
                target_boxes.extend(assigned.map_or([0.0; 4], |g| image.boxes[g]));
                positive.push(if assigned.is_some() { 1.0f32 } else { 0.0 });
            }
        }
        let a = a as i64;
        let target_classes = Tensor::from_slice(&target_classes)
            .view([n, a])
            .to_device(device);
        let target_boxes = Tensor::from_slice(&target_boxes)
            .view([n, a, 4])
            .to_device(device);
        let positive = Tensor::from_slice(&positive).view([n, a]).to_device(device);

        let output = output.to_kind(Kind::Float);
        let boxes = self.activations_to_boxes(&output.narrow(2, 0, 4));
        let errors = (boxes - target_boxes).abs();
        let errors = match self.params.box_loss {
            SsdBoxLoss::L1 => errors,
            // [A, 4]: each anchor's height, width, height, width, as the corners.
            SsdBoxLoss::L1AnchorUnits => {
                let sides = Tensor::cat(&[&self.sizes, &self.sizes], 1).to_device(device);
                errors / sides
            }
        };
        let per_image_l1 = (errors * positive.unsqueeze(-1)).sum_dim_intlist(
            [1i64, 2].as_slice(),
            false,
            Kind::Float,
        );
        let matched = positive.sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
        let loc_loss = (per_image_l1 / (matched * 4.0).clamp_min(1.0)).sum(Kind::Float);

        let classes = self.classes as i64;
        let logits = output.narrow(2, 4, classes);
        // One-hot over classes + background, background column dropped: a
        // background anchor's target is all zeros.
        let targets = target_classes
            .one_hot(classes + 1)
            .narrow(2, 0, classes)
            .to_kind(Kind::Float);
        let class_loss = focal_loss(&logits, &targets, self.params.focal) / classes as f64;
        (loc_loss, class_loss)
    }

    /// Flip TTA: the output on a batch of `size`-pixel images and the output on
    /// the same images mirrored left-right (`[N, A, 4 + classes + 1]` each) as
    /// one output of two passes, `[N, 2A, 4 + classes + 1]`: the first pass's
    /// rows, then the mirrored pass re-expressed for the unmirrored images.
    /// Each anchor of the mirrored pass goes to its mirror
    /// ([`Anchors::mirrored_order`]) with its box mirrored back (column `x`
    /// of the input to `size - 1 - x`, as the loader flips boxes; in `0..1`
    /// units `(size - 1) / size - x`). The passes are pooled, not averaged
    /// anchor by anchor: [`Ssd::detect`] puts both passes' boxes through one
    /// NMS, and [`Ssd::loss`] is the mean of the passes' losses. (Averaging
    /// each anchor with its mirror blurs two boxes the model disagrees on:
    /// mAP@0.5 0.398, pooled 0.405, without TTA 0.404; README, Results.)
    pub fn merge_mirrored(&self, output: &Tensor, mirrored: &Tensor, size: usize) -> Tensor {
        let (output, mirrored) = (output.to_kind(Kind::Float), mirrored.to_kind(Kind::Float));
        let mirrored = self.to_mirror_anchors(&mirrored);
        let limit = 1.0 - 1e-6;
        let boxes = self
            .mirror_offsets(&mirrored.narrow(2, 0, 4).tanh(), size)
            .clamp(-limit, limit)
            .atanh();
        let scores = mirrored.narrow(2, 4, output.size()[2] - 4);
        Tensor::cat(&[output, Tensor::cat(&[boxes, scores], 2)], 1)
    }

    /// How many passes over the anchors an output `[N, rows, columns]` holds
    /// (1, or 2 after [`Ssd::merge_mirrored`]), or why its shape is wrong.
    fn passes(&self, output: &Tensor) -> Result<usize, DecodeError> {
        let size = output.size();
        let (rows, columns) = match size[..] {
            [_, rows, columns] => (rows as usize, columns as usize),
            _ => (0, 0),
        };
        let (anchors, expected) = (self.anchors.len(), self.columns());
        if columns != expected || rows == 0 || rows % anchors != 0 {
            return Err(DecodeError::Shape {
                what: "model output per image",
                got: rows * columns,
                expected: anchors * expected,
                why: format!(
                    "{anchors} anchors x (4 box activations + {} classes + background)",
                    self.classes
                ),
            });
        }
        Ok(rows / anchors)
    }

    /// `output`'s anchor rows `[N, A, n]` reordered so that row `a` holds the
    /// row of `a`'s mirror anchor ([`Anchors::mirrored_order`], its own inverse).
    fn to_mirror_anchors(&self, output: &Tensor) -> Tensor {
        let order: Vec<i64> = self
            .anchors
            .mirrored_order()
            .into_iter()
            .map(|i| i as i64)
            .collect();
        output.index_select(1, &Tensor::from_slice(&order).to_device(output.device()))
    }

    /// The `tanh` of box activations `[N, A, 4]` on a `size`-pixel image
    /// (already at their mirror anchors) as those of the mirrored box: anchor
    /// centre `1 - x` mirrors to centre `x`, and the mirror is
    /// `(size - 1) / size - x`, so the column offset changes sign and moves by
    /// `1 / size`, in the activation's units of half a cell. Its own inverse.
    fn mirror_offsets(&self, t: &Tensor, size: usize) -> Tensor {
        let shift = (self.grid_sizes.to_device(t.device()) * size as f64).reciprocal() * 2.0;
        let column = -t.narrow(2, 1, 1) - shift.unsqueeze(0);
        Tensor::cat(&[t.narrow(2, 0, 1), column, t.narrow(2, 2, 2)], 2)
    }

    /// Each image's detections (`0..1` boxes) from a batch's output, after the
    /// score threshold and per-class NMS of `params`.
    pub fn detect(
        &self,
        output: &Tensor,
        params: &NmsParams,
    ) -> Result<Vec<Vec<Detection>>, DecodeError> {
        self.passes(output)?;
        let output = output.to_device(Device::Cpu).to_kind(Kind::Float);
        let (n, rows, columns) = output.size3().expect("[N, anchors, columns]");
        let values = Vec::<f32>::try_from(output.flatten(0, -1)).expect("float output");
        let per_image = (rows * columns) as usize;
        let mut all = Vec::with_capacity(n as usize);
        for image in values.chunks(per_image) {
            let mut boxes = Vec::with_capacity(rows as usize);
            let mut scores = Vec::with_capacity(rows as usize * self.classes);
            // Each pass covers every anchor once, in order.
            let anchors = self.anchors.anchors.iter().cycle();
            for (row, anchor) in image.chunks(columns as usize).zip(anchors) {
                boxes.push(activations_to_box([row[0], row[1], row[2], row[3]], anchor));
                scores.extend(row[4..4 + self.classes].iter().map(|&x| sigmoid(x)));
            }
            all.push(detect(&scores, self.classes, &boxes, params)?);
        }
        Ok(all)
    }
}

/// Summed focal binary cross-entropy of `logits` against 0/1 `targets` (same
/// shape). The weight is a constant of the step, as in fastai's `FocalLoss`
/// (`w.detach()`): the gradient is that of a weighted BCE.
pub fn focal_loss(logits: &Tensor, targets: &Tensor, focal: Focal) -> Tensor {
    let weight = tch::no_grad(|| {
        let p: Tensor = logits.sigmoid();
        let pt: Tensor = &p * targets + (1.0 - &p) * (1.0 - targets);
        let alpha: Tensor = targets * focal.alpha + (1.0 - targets) * (1.0 - focal.alpha);
        let hard: Tensor = 1.0 - pt;
        alpha * hard.pow_tensor_scalar(focal.gamma)
    });
    logits.binary_cross_entropy_with_logits::<Tensor>(
        targets,
        Some(weight),
        None,
        tch::Reduction::Sum,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use multibox::anchors::AnchorParams;

    fn lesson_ssd(classes: usize) -> Ssd {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        Ssd::new(anchors, classes, SsdLossParams::default())
    }

    #[test]
    fn the_tensor_activation_is_multibox_activation() {
        let ssd = lesson_ssd(3);
        tch::manual_seed(0);
        let activations = Tensor::randn([2, 189, 4], (Kind::Float, Device::Cpu)) * 2.0;
        let boxes = ssd.activations_to_boxes(&activations);
        let a = Vec::<f32>::try_from(activations.flatten(0, -1)).unwrap();
        let b = Vec::<f32>::try_from(boxes.flatten(0, -1)).unwrap();
        for (i, (act, got)) in a.chunks(4).zip(b.chunks(4)).enumerate() {
            let want = activations_to_box(
                [act[0], act[1], act[2], act[3]],
                &ssd.anchors().anchors[i % 189],
            );
            for k in 0..4 {
                assert!(
                    (got[k] - want[k]).abs() < 1e-6,
                    "anchor {i}: {got:?} {want:?}"
                );
            }
        }
    }

    #[test]
    fn focal_loss_of_known_values() {
        // Logit 0 (p = 0.5): BCE ln 2 either way; weight alpha * 0.5^2 for a
        // positive, (1 - alpha) * 0.5^2 for a negative.
        let logits = Tensor::from_slice(&[0.0f32, 0.0]);
        let targets = Tensor::from_slice(&[1.0f32, 0.0]);
        let loss = focal_loss(&logits, &targets, Focal::default()).double_value(&[]);
        let want = (0.25 * 0.25 + 0.75 * 0.25) * 2f64.ln();
        assert!((loss - want).abs() < 1e-6, "{loss} != {want}");
        // gamma 0 and alpha 0.5 is half the plain BCE.
        let plain = Focal {
            alpha: 0.5,
            gamma: 0.0,
        };
        let logits = Tensor::from_slice(&[2.0f32, -1.0]);
        let bce = logits
            .binary_cross_entropy_with_logits::<Tensor>(&targets, None, None, tch::Reduction::Sum)
            .double_value(&[]);
        let loss = focal_loss(&logits, &targets, plain).double_value(&[]);
        assert!((loss - bce / 2.0).abs() < 1e-6);
        // A confident right answer costs far less than a confident wrong one.
        let right = focal_loss(
            &Tensor::from_slice(&[4.0f32]),
            &Tensor::from_slice(&[1.0f32]),
            Focal::default(),
        );
        let wrong = focal_loss(
            &Tensor::from_slice(&[-4.0f32]),
            &Tensor::from_slice(&[1.0f32]),
            Focal::default(),
        );
        assert!(right.double_value(&[]) * 1e4 < wrong.double_value(&[]));
    }

    /// An output as right as the anchors allow: every matched anchor's
    /// activations put its box on its object (as near as the `tanh` range
    /// lets it) with its class logit high (20 for the anchor the object
    /// claimed, 8 for the others, so that NMS keeps the claimed one), every
    /// other logit -20.
    fn perfect_output(ssd: &Ssd, image: &ImageObjects) -> Tensor {
        let anchors = &ssd.anchors().anchors;
        let matching = map_to_ground_truth(
            &IouMatrix::new(&image.boxes, &ssd.anchors().corners()),
            LESSON_MATCH_THRESHOLD,
        );
        let mut values = Vec::new();
        for (a, assigned) in matching.assigned.iter().enumerate() {
            let mut row = vec![-20.0f32; ssd.columns()];
            row[..4].fill(0.0);
            if let Some(g) = assigned {
                let offsets = multibox::matching::box_to_offsets(image.boxes[*g], &anchors[a]);
                for k in 0..4 {
                    row[k] = offsets[k].clamp(-0.999_999, 0.999_999).atanh();
                }
                row[4 + image.classes[*g]] = if matching.claimed[a] { 20.0 } else { 8.0 };
            }
            values.extend(row);
        }
        Tensor::from_slice(&values).view([1, anchors.len() as i64, ssd.columns() as i64])
    }

    #[test]
    fn a_perfect_output_has_almost_no_loss_and_decodes_to_the_objects() {
        let ssd = lesson_ssd(3);
        // Two objects that anchors can reach exactly: the 2x2 grid's
        // top-left cell at zoom 1 (0.5 x 0.5 around (0.25, 0.25)), and a box
        // on the single 1x1 cell.
        let image = ImageObjects {
            boxes: vec![[0.0, 0.0, 0.5, 0.5], [0.1, 0.1, 0.9, 0.9]],
            classes: vec![2, 0],
        };
        let output = perfect_output(&ssd, &image);
        // Not 0: a few matched anchors cannot reach their object (an offset
        // past tanh's range), which leaves them a small L1 (0.007 here).
        let loss = ssd.loss(&output, std::slice::from_ref(&image));
        assert!(
            loss.double_value(&[]) < 0.02,
            "loss {}",
            loss.double_value(&[])
        );
        // Moving the class logits off costs more.
        let worse = output.copy();
        let _ = worse.narrow(2, 4, 3).fill_(0.0);
        assert!(
            ssd.loss(&worse, std::slice::from_ref(&image))
                .double_value(&[])
                > 1.0
        );

        let detections = ssd.detect(&output, &NmsParams::default()).unwrap();
        assert_eq!(detections.len(), 1);
        // NMS leaves one box per object (anchors matched to the same object
        // give the same box).
        let mut found: Vec<(usize, Corners)> =
            detections[0].iter().map(|d| (d.class, d.bbox)).collect();
        found.sort_by_key(|(c, _)| *c);
        assert_eq!(found.len(), 2, "{found:?}");
        for ((class, bbox), (want_class, want_box)) in found
            .iter()
            .zip([(0usize, image.boxes[1]), (2, image.boxes[0])])
        {
            assert_eq!(*class, want_class);
            for k in 0..4 {
                assert!(
                    (bbox[k] - want_box[k]).abs() < 1e-4,
                    "{bbox:?} {want_box:?}"
                );
            }
        }
    }

    /// `output`'s mirror image: the output on the mirrored images that
    /// [`Ssd::merge_mirrored`] maps back to `output`.
    fn mirror_of(ssd: &Ssd, output: &Tensor, size: usize) -> Tensor {
        let boxes = ssd
            .mirror_offsets(&output.narrow(2, 0, 4).tanh(), size)
            .atanh();
        let classes = output.narrow(2, 4, output.size()[2] - 4);
        ssd.to_mirror_anchors(&Tensor::cat(&[boxes, classes], 2))
    }

    #[test]
    fn flip_tta_maps_the_mirrored_pass_back_as_a_second_pass() {
        let ssd = lesson_ssd(3);
        tch::manual_seed(1);
        // Small offsets, so the mirror's shifted offsets stay inside tanh's range.
        let output = Tensor::randn([2, 189, 8], (Kind::Float, Device::Cpu)) * 0.5;
        let other = Tensor::randn([2, 189, 8], (Kind::Float, Device::Cpu)) * 0.5;
        let merged = ssd.merge_mirrored(&output, &mirror_of(&ssd, &other, 224), 224);
        assert_eq!(merged.size(), [2, 2 * 189, 8]);
        assert_eq!(ssd.passes(&merged).unwrap(), 2);
        let diff = |a: Tensor, b: &Tensor| (a - b).abs().max().double_value(&[]);
        assert!(diff(merged.narrow(1, 0, 189), &output) < 1e-4);
        assert!(diff(merged.narrow(1, 189, 189), &other) < 1e-4);
        // The loss of the two passes is the mean of theirs.
        let objects = vec![
            ImageObjects {
                boxes: vec![[0.1, 0.2, 0.6, 0.5]],
                classes: vec![2],
            };
            2
        ];
        let want = (ssd.loss(&output, &objects) + ssd.loss(&other, &objects)) / 2.0;
        assert!(diff(ssd.loss(&merged, &objects), &want) < 1e-5);
    }

    #[test]
    fn flip_tta_finds_the_object_its_two_passes_found() {
        let ssd = lesson_ssd(3);
        let size = 224;
        let edge = (size - 1) as f32 / size as f32;
        // An object the 2x2 grid's top-left anchor reaches, and the same
        // object in the mirror image (column x to (size - 1) / size - x, as the
        // loader flips boxes).
        let [top, left, bottom, right] = [0.0, 0.0, 0.5, 0.5];
        let image = ImageObjects {
            boxes: vec![[top, left, bottom, right]],
            classes: vec![1],
        };
        let mirrored = ImageObjects {
            boxes: vec![[top, edge - right, bottom, edge - left]],
            classes: vec![1],
        };
        let merged = ssd.merge_mirrored(
            &perfect_output(&ssd, &image),
            &perfect_output(&ssd, &mirrored),
            size,
        );
        let detections = ssd.detect(&merged, &NmsParams::default()).unwrap();
        // Both passes' boxes go through one NMS: one object, one detection.
        assert_eq!(detections[0].len(), 1, "{:?}", detections[0]);
        let best = detections[0]
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .expect("a detection");
        assert_eq!(best.class, 1);
        for k in 0..4 {
            assert!(
                (best.bbox[k] - image.boxes[0][k]).abs() < 1e-4,
                "{:?} {:?}",
                best.bbox,
                image.boxes[0]
            );
        }
    }

    #[test]
    fn the_box_l1_in_anchor_units_divides_each_error_by_its_anchors_side() {
        let anchors = Anchors::new(&AnchorParams::default()).unwrap();
        // A small object and a large one; all activations 0 put every anchor's
        // box on the anchor itself, so each matched anchor's error is known.
        let image = ImageObjects {
            boxes: vec![[0.05, 0.1, 0.3, 0.35], [0.2, 0.3, 0.95, 0.9]],
            classes: vec![0, 1],
        };
        let output = Tensor::zeros([1, 189, 7], (Kind::Float, Device::Cpu));
        let matching = map_to_ground_truth(
            &IouMatrix::new(&image.boxes, &anchors.corners()),
            LESSON_MATCH_THRESHOLD,
        );
        let (mut image_units, mut anchor_units, mut coordinates) = (0.0, 0.0, 0.0);
        for (anchor, assigned) in anchors.anchors.iter().zip(&matching.assigned) {
            let Some(g) = assigned else { continue };
            let [h, w] = anchor.centre_size.size;
            for (k, side) in [h, w, h, w].into_iter().enumerate() {
                let error = f64::from((anchor.corners[k] - image.boxes[*g][k]).abs());
                image_units += error;
                anchor_units += error / f64::from(side);
            }
            coordinates += 4.0;
        }
        assert!(coordinates >= 8.0, "both objects matched");
        for (box_loss, want) in [
            (SsdBoxLoss::L1, image_units / coordinates),
            (SsdBoxLoss::L1AnchorUnits, anchor_units / coordinates),
        ] {
            let params = SsdLossParams {
                box_loss,
                ..SsdLossParams::default()
            };
            let ssd = Ssd::new(anchors.clone(), 2, params);
            let (box_part, _) = ssd.loss_parts(&output, std::slice::from_ref(&image));
            let got = box_part.double_value(&[]);
            assert!((got - want).abs() < 1e-5, "{box_loss:?}: {got} != {want}");
        }
        // Every anchor is smaller than the image, so each error weighs more.
        assert!(anchor_units > 1.5 * image_units);
    }

    #[test]
    fn an_image_without_objects_costs_only_its_background() {
        let ssd = lesson_ssd(2);
        let output = Tensor::zeros([1, 189, 7], (Kind::Float, Device::Cpu));
        let loss = ssd
            .loss(&output, &[ImageObjects::default()])
            .double_value(&[]);
        // Every logit 0 against target 0: (1 - alpha) * 0.5^2 * ln 2 each, over 2 classes.
        let want = 189.0 * 2.0 * 0.75 * 0.25 * 2f64.ln() / 2.0;
        assert!((loss - want).abs() < 1e-3, "{loss} != {want}");
    }

    #[test]
    fn a_wrong_shape_is_an_error_not_a_panic() {
        let ssd = lesson_ssd(2);
        let output = Tensor::zeros([1, 100, 7], (Kind::Float, Device::Cpu));
        assert!(matches!(
            ssd.detect(&output, &NmsParams::default()),
            Err(DecodeError::Shape { .. })
        ));
    }
}
