//! Test-time augmentation, the lesson's `learn.TTA()`: each image's prediction
//! averaged over views of it (the image itself, its mirror image, and copies drawn
//! with the training augmentation), every view's box mapped back onto the image
//! before averaging.

use crate::data::DataSource;
use crate::learner::boxes_in_input_pixels;
use crate::task::{Outputs, BOX_UNITS};
use crate::TrainError;
use augment::{box_before_affine, Affine};
use tch::Tensor;

/// Which views of each image a prediction averages, beside the image itself.
#[derive(Clone, Copy, Default)]
pub struct Tta<'a> {
    /// The mirror image. For the detector both passes' detections are pooled
    /// before non-maximum suppression instead ([`crate::ssd::Ssd::merge_mirrored`]).
    pub flip: bool,
    /// Copies of every image drawn with the training augmentation (classes and
    /// single boxes; the detector takes the flip only).
    pub augmented: Option<AugmentedCopies<'a>>,
}

/// `copies` augmented copies of every image: epochs `0..copies` of `source`, a
/// source over the same images in the same order as the data predicted on, with
/// the training augmentation, whose batches say how each image moved
/// ([`crate::Batch::moves`]). fastai 0.7's `TTA(n_aug=4)` draws 4.
#[derive(Clone, Copy)]
pub struct AugmentedCopies<'a> {
    pub source: &'a dyn DataSource,
    pub copies: usize,
}

impl Tta<'_> {
    /// The image alone.
    pub const NONE: Tta<'static> = Tta {
        flip: false,
        augmented: None,
    };

    /// The image and its mirror image.
    pub const FLIP: Tta<'static> = Tta {
        flip: true,
        augmented: None,
    };

    /// How many augmented copies each image gets.
    pub fn copies(&self) -> usize {
        self.augmented.map_or(0, |a| a.copies)
    }

    /// Whether any view beside the image itself is averaged.
    pub fn is_on(&self) -> bool {
        self.flip || self.copies() > 0
    }

    /// The views in words, for summaries: "flip TTA", "flip + 4 augmented copies TTA".
    pub fn describe(&self) -> String {
        let copies = match self.copies() {
            0 => None,
            1 => Some("1 augmented copy".to_string()),
            n => Some(format!("{n} augmented copies")),
        };
        let views: Vec<String> = self
            .flip
            .then(|| "flip".to_string())
            .into_iter()
            .chain(copies)
            .collect();
        format!("{} TTA", views.join(" + "))
    }
}

impl Outputs {
    /// The outputs on `size`-pixel images that went through `moves` (one per image;
    /// `None` or an empty list: not moved), each box mapped back to where it lies on
    /// the image before the move ([`box_before_affine`], the inverse of the training
    /// targets' tight boxes); classes need no mapping. Not for the detector, whose
    /// boxes are anchor offsets.
    pub fn mapped_back(self, moves: &[Option<Affine>], size: usize) -> Result<Outputs, TrainError> {
        if self.detector.is_some() {
            return Err(TrainError::TtaAugmentedDetector);
        }
        let Some(boxes) = &self.boxes else {
            return Ok(self);
        };
        if moves.iter().all(Option::is_none) {
            return Ok(self);
        }
        let pixels = boxes_in_input_pixels(boxes, size)?;
        let to_units = (BOX_UNITS / size as f64) as f32;
        let back: Vec<f32> = pixels
            .iter()
            .zip(moves)
            .flat_map(|(&bbox, forward)| {
                forward
                    .as_ref()
                    .map_or(bbox, |forward| box_before_affine(bbox, forward))
                    .map(|v| v * to_units)
            })
            .collect();
        let back = Tensor::from_slice(&back)
            .view([pixels.len() as i64, 4])
            .to_kind(boxes.kind())
            .to_device(boxes.device());
        Ok(Outputs {
            boxes: Some(back),
            ..self
        })
    }

    /// Each image's prediction averaged over `views` of it (outputs on the same
    /// images, boxes already mapped back): the class probabilities and the boxes.
    pub fn average(mut views: Vec<Outputs>) -> Outputs {
        if views.len() == 1 {
            // As it is: the log of the exponential would lose the smallest probabilities.
            return views.pop().expect("one view");
        }
        let n = views.len() as f64;
        let mut class_probs: Option<Tensor> = None;
        let mut boxes: Option<Tensor> = None;
        let mut detector = None;
        for view in views {
            let sum = |total: Option<Tensor>, next: Tensor| match total {
                Some(total) => total + next,
                None => next,
            };
            if let Some(log_probs) = view.class_log_probs {
                class_probs = Some(sum(class_probs, log_probs.exp()));
            }
            if let Some(view_boxes) = view.boxes {
                boxes = Some(sum(boxes, view_boxes));
            }
            detector = detector.or(view.detector);
        }
        Outputs {
            class_log_probs: class_probs.map(|p| (p / n).log()),
            boxes: boxes.map(|b| b / n),
            detector,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Task;

    fn boxes(b: [f32; 4]) -> Outputs {
        Outputs {
            class_log_probs: None,
            boxes: Some(Tensor::from_slice(&b).view([1, 4])),
            detector: None,
        }
    }

    fn first_box(outputs: &Outputs) -> Vec<f32> {
        Vec::<f32>::try_from(outputs.boxes.as_ref().unwrap().view(-1)).unwrap()
    }

    #[test]
    fn a_mirror_symmetric_box_is_unchanged_and_a_mirrored_one_maps_back() {
        let mirror = [Some(Affine::hflip(224))];
        // In a 224 input, a box from column 50 to 173 is its own mirror image.
        let symmetric = [10.0f32, 50.0, 100.0, 173.0];
        let merged = Outputs::average(vec![
            boxes(symmetric),
            boxes(symmetric).mapped_back(&mirror, 224).unwrap(),
        ]);
        let want = Tensor::from_slice(&symmetric).view([1, 4]);
        assert!(merged.boxes.unwrap().allclose(&want, 1e-4, 1e-4, false));
        // A box predicted on the mirror image maps back: 10..30 mirrors to 193..213.
        let back = boxes([0.0, 193.0, 20.0, 213.0])
            .mapped_back(&mirror, 224)
            .unwrap();
        let got = first_box(&back);
        for (got, want) in got.iter().zip([0.0, 10.0, 20.0, 30.0]) {
            assert!((got - want).abs() < 1e-4, "{got} against {want}");
        }
    }

    #[test]
    fn boxes_map_back_in_input_pixels_whatever_the_size() {
        // At 256 px the box units are still 224-pixel ones: the box 16..48 (input
        // pixels) in units is 14..42; its mirror in a 256 input is 207..239.
        let units = (224.0 / 256.0) as f32;
        let mirrored = [0.0, 207.0, 32.0, 239.0].map(|v: f32| v * units);
        let back = boxes(mirrored)
            .mapped_back(&[Some(Affine::hflip(256))], 256)
            .unwrap();
        for (got, want) in first_box(&back).iter().zip([0.0, 16.0, 32.0, 48.0]) {
            assert!(
                (got - want * units).abs() < 1e-4,
                "{got} against {}",
                want * units
            );
        }
        // A copy rotated 10 degrees about the centre: the tight box of the box maps
        // back to the box (not to the larger box around its corners mapped back).
        let forward = Affine::rotation(10.0, 128.0, 128.0);
        let bbox = [100.0f32, 90.0, 160.0, 170.0];
        let moved = augment::box_after_affine(bbox, &forward, 256, 256);
        let back = boxes(moved.map(|v| v * units))
            .mapped_back(&[Some(forward)], 256)
            .unwrap();
        for (got, want) in first_box(&back).iter().zip(bbox) {
            assert!(
                (got - want * units).abs() < 1e-3,
                "{got} against {}",
                want * units
            );
        }
    }

    #[test]
    fn views_average_probabilities_and_boxes_and_unmoved_views_stay() {
        let task = Task::Classify {
            classes: vec!["a".into(), "b".into()],
        };
        let a = task.decode(&Tensor::from_slice(&[0.0f32, 0.0]).view([1, 2])); // 0.5, 0.5
        let b = task.decode(&Tensor::from_slice(&[(3.0f32).ln(), 0.0]).view([1, 2])); // 0.75, 0.25
        let c = task.decode(&Tensor::from_slice(&[0.0f32, (3.0f32).ln()]).view([1, 2])); // 0.25, 0.75
                                                                                         // Classes need no mapping back, whatever the move.
        let b = b
            .mapped_back(&[Some(Affine::rotation(5.0, 1.0, 1.0))], 224)
            .unwrap();
        let probs = Outputs::average(vec![a, b, c])
            .class_log_probs
            .unwrap()
            .exp();
        let want = Tensor::from_slice(&[0.5f32, 0.5]).view([1, 2]);
        assert!(probs.allclose(&want, 1e-5, 1e-5, false));
        let averaged = Outputs::average(vec![
            boxes([0.0, 0.0, 10.0, 10.0]),
            boxes([2.0, 4.0, 12.0, 20.0])
                .mapped_back(&[None], 224)
                .unwrap(),
        ]);
        assert_eq!(first_box(&averaged), vec![1.0, 2.0, 11.0, 15.0]);
    }

    #[test]
    fn the_detectors_output_is_not_mapped_back_and_views_describe_themselves() {
        let detector = Outputs {
            class_log_probs: None,
            boxes: None,
            detector: Some(Tensor::zeros(
                [1, 3, 6],
                (tch::Kind::Float, tch::Device::Cpu),
            )),
        };
        assert!(matches!(
            detector.mapped_back(&[None], 224),
            Err(TrainError::TtaAugmentedDetector)
        ));
        assert_eq!(Tta::FLIP.describe(), "flip TTA");
        assert!(!Tta::NONE.is_on() && Tta::FLIP.is_on());
    }
}
