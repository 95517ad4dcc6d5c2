//! The building blocks of the single-shot multibox detector (SSD) of the
//! course's next lesson (DL2 2018 lesson 9, `pascal-multi.ipynb`), in pure
//! Rust on plain `f32` data, without tch, so that they build and test in
//! seconds and the trainer and the pipeline stages can share them.
//!
//! | lesson | module |
//! |---|---|
//! | `trn_anno` with every object; `mbb.csv`, `mc.csv`; the per-box classes | [`annotations`] |
//! | the `ignore`d (difficult) boxes the lesson drops, for evaluation | [`difficult`] |
//! | `hw2corners`, `jaccard` | [`boxes`] |
//! | `anc_grids`, `anc_zooms`, `anc_ratios`, `anchors`, `grid_sizes`, `anchor_cnr` | [`anchors`] |
//! | `map_to_ground_truth`, the 0.4 threshold, `actn_to_bb` | [`matching`] |
//! | `nms`, `show_nmf`'s score threshold, boxes back to original pixels | [`nms`] |
//! | the detections the predict stage writes and evaluation reads | [`detections`] |
//! | VOC mAP@0.5 (11-point and all-point), per-class AP and PR curves | [`map`] |
//!
//! Box conventions: `[top, left, bottom, right]` everywhere. Annotation and
//! evaluation boxes are inclusive pixels of the original image (as
//! `voc-annotations` gives them and the VOC devkit scores them); anchors,
//! matching and NMS work on continuous `0..1` boxes of the squashed input
//! (the lesson divides its boxes by the input size).

pub mod anchors;
pub mod annotations;
pub mod boxes;
pub mod detections;
pub mod difficult;
pub mod map;
pub mod matching;
pub mod nms;
