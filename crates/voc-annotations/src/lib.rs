//! Pascal VOC annotations as one typed model, read from either source the
//! lesson knows:
//!
//! * the COCO-style JSON the lesson loads (`pascal_train2007.json`: `images`,
//!   `annotations` with `bbox = [x, y, w, h]` and `ignore`, `categories`), see
//!   [`load_coco_json`];
//! * the VOC devkit (`VOC2007/Annotations/*.xml` listed by
//!   `ImageSets/Main/<split>.txt`), see [`load_voc_xml`].
//!
//! Both give the same [`Dataset`] for the same annotations: images in file
//! (list) order, categories with ids 1..20 in alphabetical VOC class order,
//! and per image its objects in annotation order with boxes in the lesson's
//! convention `[top, left, bottom, right]`, inclusive pixel coordinates as
//! `f32` (COCO `[x, y, w, h]` becomes `[y, x, y+h-1, x+w-1]`, see [`hw_bb`];
//! [`bb_hw`] is the reverse).
//!
//! # What is dropped, repaired or refused
//!
//! * Boxes flagged `ignore` (JSON) / `difficult` (XML) are dropped, as the
//!   lesson drops them; [`LoadStats::ignored`] counts them.
//! * A box that sticks out of its image is **clamped** to the image and counted
//!   in [`LoadStats::clamped`] with a `tracing` warning. Clamping rather than
//!   refusing keeps a whole dataset usable over a one-pixel annotation slip,
//!   and the box still marks the visible part of the object. A box lying
//!   *entirely* outside its image is refused ([`AnnotationError::BoxOutsideImage`]):
//!   clamping it would invent a box that marks nothing.
//! * Refused with a typed [`AnnotationError`] naming the file: malformed JSON
//!   or XML (with line and column), a box of zero or negative width or height
//!   (or under one pixel, which the inclusive convention would turn inside out),
//!   an annotation naming an unknown image or category, duplicate image or
//!   category ids, an image of zero size, a listed XML file that is missing,
//!   and an unreadable file or folder. Ignored boxes are checked too: bad input
//!   is reported even where the lesson would drop it.
//! * Refused, naming the file and the image: a file name (JSON
//!   `images[].file_name`, XML `<filename>`) that is empty, absolute, or has a
//!   `..`, `.` or empty component, so that no later stage opens a file outside
//!   the images folder ([`csv_export::check_file_name`], the project's one
//!   such check).
//! * Refused, naming the file and saying why ([`AnnotationError::NoUsableBox`]):
//!   a source with no usable box at all (no images, no annotations, or every
//!   box flagged `ignore` / `difficult`), so that the error comes from here and
//!   not from a later stage finding an empty CSV. (A box lying entirely
//!   outside its image is refused on its own, above.) A single image without
//!   a usable box is only warned about and left out, by `largest-object`.

mod coco;
mod voc_xml;

use std::path::PathBuf;

pub use coco::{load_coco_json, parse_coco_json};
pub use voc_xml::{load_voc_xml, parse_voc_xml};

/// A box in the lesson's convention: `[top, left, bottom, right]`, inclusive
/// pixel coordinates.
pub type BBox = [f32; 4];

/// The 20 VOC classes in alphabetical order; class `VOC_CLASSES[i]` has
/// category id `i + 1` (the convention of the lesson's JSON).
pub const VOC_CLASSES: [&str; 20] = [
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
];

/// A whole annotation set.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    /// Images in the order of the source (JSON `images` array / split list).
    pub images: Vec<ImageInfo>,
    /// Categories in the order of the source.
    pub categories: Vec<Category>,
    pub stats: LoadStats,
}

/// One image and its usable objects.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageInfo {
    pub id: u64,
    pub file_name: String,
    pub width: u32,
    pub height: u32,
    /// Objects in annotation order, ignored/difficult ones dropped.
    pub objects: Vec<Object>,
}

/// One annotated object.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Object {
    /// `[top, left, bottom, right]`, inclusive, clamped to the image.
    pub bbox: BBox,
    pub category_id: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub id: u32,
    pub name: String,
}

/// What loading dropped or repaired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LoadStats {
    /// Boxes flagged `ignore` / `difficult`, dropped.
    pub ignored: usize,
    /// Boxes partly outside their image, clamped to it.
    pub clamped: usize,
}

impl Dataset {
    /// The name of category `id`, if the dataset has it.
    pub fn category_name(&self, id: u32) -> Option<&str> {
        self.categories
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.name.as_str())
    }

    /// Number of usable objects over all images.
    pub fn object_count(&self) -> usize {
        self.images.iter().map(|i| i.objects.len()).sum()
    }
}

/// COCO `[x, y, w, h]` to the lesson's `[top, left, bottom, right]` (inclusive):
/// `[y, x, y+h-1, x+w-1]`.
pub fn hw_bb(xywh: [f32; 4]) -> BBox {
    let [x, y, w, h] = xywh;
    [y, x, y + h - 1.0, x + w - 1.0]
}

/// The lesson's `[top, left, bottom, right]` back to COCO `[x, y, w, h]`.
pub fn bb_hw(bb: BBox) -> [f32; 4] {
    let [top, left, bottom, right] = bb;
    [left, top, right - left + 1.0, bottom - top + 1.0]
}

/// Why an annotation file could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum AnnotationError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: listed in {} but missing", path.display(), list.display())]
    MissingListedFile { path: PathBuf, list: PathBuf },
    #[error("{}:{line}:{column}: malformed JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}:{line}:{column}: malformed XML: {message}", path.display())]
    Xml {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {what}: invalid: {message}", path.display())]
    Invalid {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("{}: {what} names unknown image id {image_id}", path.display())]
    UnknownImage {
        path: PathBuf,
        what: String,
        image_id: u64,
    },
    #[error("{}: {what} names unknown category {category}", path.display())]
    UnknownCategory {
        path: PathBuf,
        what: String,
        category: String,
    },
    #[error("{}: {what}: box [x, y, w, h] = {xywh:?} has zero or negative size (or is under one pixel wide or high)", path.display())]
    EmptyBox {
        path: PathBuf,
        what: String,
        xywh: [f32; 4],
    },
    #[error("{}: no usable box: {reason}", path.display())]
    NoUsableBox { path: PathBuf, reason: String },
    #[error("{}: {what}: box [x, y, w, h] = {xywh:?} lies entirely outside its {width}x{height} image", path.display())]
    BoxOutsideImage {
        path: PathBuf,
        what: String,
        xywh: [f32; 4],
        width: u32,
        height: u32,
    },
}

/// How a COCO box relates to its image.
enum BoxCheck {
    Inside(BBox),
    Clamped(BBox),
    Empty,
    Outside,
}

/// Checks a COCO `[x, y, w, h]` box against a `width` x `height` image and
/// converts it, clamping it to the image where it sticks out.
fn check_box(xywh: [f32; 4], width: u32, height: u32) -> BoxCheck {
    let [_, _, w, h] = xywh;
    // `!(w > 0)` also refuses NaN.
    if !(w > 0.0 && h > 0.0) || xywh.iter().any(|v| !v.is_finite()) {
        return BoxCheck::Empty;
    }
    let [top, left, bottom, right] = hw_bb(xywh);
    // Under one pixel the inclusive box is inverted (bottom < top): as empty as a
    // size of 0, and bb.csv's reader would refuse it later (found by fuzzing).
    if bottom < top || right < left {
        return BoxCheck::Empty;
    }
    let (max_y, max_x) = (height as f32 - 1.0, width as f32 - 1.0);
    if top > max_y || left > max_x || bottom < 0.0 || right < 0.0 {
        return BoxCheck::Outside;
    }
    let clamped = [
        top.max(0.0),
        left.max(0.0),
        bottom.min(max_y),
        right.min(max_x),
    ];
    if clamped == [top, left, bottom, right] {
        BoxCheck::Inside(clamped)
    } else {
        BoxCheck::Clamped(clamped)
    }
}

/// Per-box clamp warnings stop after this many; the count continues.
const CLAMP_WARNINGS_SHOWN: usize = 10;

/// Runs [`check_box`] for one annotation and turns refusals into errors,
/// counting (and warning about) clamps.
fn accept_box(
    xywh: [f32; 4],
    image: &ImageInfo,
    path: &std::path::Path,
    what: impl FnOnce() -> String,
    stats: &mut LoadStats,
) -> Result<BBox, AnnotationError> {
    match check_box(xywh, image.width, image.height) {
        BoxCheck::Inside(bb) => Ok(bb),
        BoxCheck::Clamped(bb) => {
            stats.clamped += 1;
            if stats.clamped <= CLAMP_WARNINGS_SHOWN {
                tracing::warn!(
                    "{}: {}: box [x, y, w, h] = {xywh:?} sticks out of its {}x{} image {}; clamped to {bb:?}",
                    path.display(),
                    what(),
                    image.width,
                    image.height,
                    image.file_name
                );
            }
            Ok(bb)
        }
        BoxCheck::Empty => Err(AnnotationError::EmptyBox {
            path: path.to_owned(),
            what: what(),
            xywh,
        }),
        BoxCheck::Outside => Err(AnnotationError::BoxOutsideImage {
            path: path.to_owned(),
            what: what(),
            xywh,
            width: image.width,
            height: image.height,
        }),
    }
}

fn check_image_size(image: &ImageInfo, path: &std::path::Path) -> Result<(), AnnotationError> {
    if image.width == 0 || image.height == 0 {
        return Err(AnnotationError::Invalid {
            path: path.to_owned(),
            what: format!("image {} ({})", image.id, image.file_name),
            message: format!("size {}x{} is empty", image.width, image.height),
        });
    }
    Ok(())
}

/// Refuses a file name that could lead out of the images folder.
fn check_file_name(
    file_name: &str,
    path: &std::path::Path,
    what: impl FnOnce() -> String,
) -> Result<(), AnnotationError> {
    csv_export::check_file_name(file_name).map_err(|e| AnnotationError::Invalid {
        path: path.to_owned(),
        what: what(),
        message: e.to_string(),
    })
}

/// Refuses a whole source without one usable box, saying why.
fn check_some_box(
    dataset: &Dataset,
    path: &std::path::Path,
    boxes: usize,
    ignored_as: &str,
) -> Result<(), AnnotationError> {
    if dataset.object_count() > 0 {
        return Ok(());
    }
    let images = match dataset.images.len() {
        1 => "1 image".to_owned(),
        n => format!("{n} images"),
    };
    let reason = if dataset.images.is_empty() {
        "it lists no images".to_owned()
    } else if boxes == 0 {
        format!("it has no annotations at all (for {images})")
    } else if boxes == 1 {
        format!("the only box (of {images}) is flagged {ignored_as}, which the lesson drops")
    } else {
        format!("all {boxes} boxes (of {images}) are flagged {ignored_as}, which the lesson drops")
    };
    Err(AnnotationError::NoUsableBox {
        path: path.to_owned(),
        reason,
    })
}

fn summarise_clamps(stats: &LoadStats, path: &std::path::Path) {
    if stats.clamped > CLAMP_WARNINGS_SHOWN {
        tracing::warn!(
            "{}: {} boxes in all were clamped to their images",
            path.display(),
            stats.clamped
        );
    }
}

/// 1-based line and column of byte offset `pos` in `text`.
fn line_column(text: &[u8], pos: usize) -> (usize, usize) {
    let before = &text[..pos.min(text.len())];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    (line, pos.min(text.len()) - line_start + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hw_bb_matches_the_lesson_and_bb_hw_reverses_it() {
        // The lesson's first annotation: image 12, car, [155, 96, 196, 174].
        assert_eq!(
            hw_bb([155.0, 96.0, 196.0, 174.0]),
            [96.0, 155.0, 269.0, 350.0]
        );
        assert_eq!(
            bb_hw([96.0, 155.0, 269.0, 350.0]),
            [155.0, 96.0, 196.0, 174.0]
        );
        for xywh in [
            [0.0, 0.0, 1.0, 1.0],
            [3.5, 7.0, 10.25, 2.0],
            [499.0, 332.0, 1.0, 1.0],
        ] {
            assert_eq!(bb_hw(hw_bb(xywh)), xywh);
        }
    }

    #[test]
    fn check_box_cases() {
        let cases: &[([f32; 4], &str, Option<BBox>)] = &[
            ([0.0, 0.0, 10.0, 5.0], "inside", Some([0.0, 0.0, 4.0, 9.0])),
            (
                [0.0, 0.0, 20.0, 10.0],
                "inside",
                Some([0.0, 0.0, 9.0, 19.0]),
            ),
            ([-2.0, 0.0, 5.0, 5.0], "clamped", Some([0.0, 0.0, 4.0, 2.0])),
            (
                [15.0, 8.0, 10.0, 10.0],
                "clamped",
                Some([8.0, 15.0, 9.0, 19.0]),
            ),
            ([0.0, 0.0, 0.0, 5.0], "empty", None),
            ([0.0, 0.0, 5.0, -1.0], "empty", None),
            ([0.0, 0.0, f32::NAN, 5.0], "empty", None),
            ([5.0, 5.0, 0.5, 2.0], "empty", None),
            ([5.0, 5.0, 2.0, 0.999], "empty", None),
            ([20.0, 0.0, 5.0, 5.0], "outside", None),
            ([-6.0, 0.0, 5.0, 5.0], "outside", None),
        ];
        for &(xywh, expected, bb) in cases {
            let (kind, got) = match check_box(xywh, 20, 10) {
                BoxCheck::Inside(b) => ("inside", Some(b)),
                BoxCheck::Clamped(b) => ("clamped", Some(b)),
                BoxCheck::Empty => ("empty", None),
                BoxCheck::Outside => ("outside", None),
            };
            assert_eq!((kind, got), (expected, bb), "box {xywh:?}");
        }
    }

    #[test]
    fn line_column_is_one_based() {
        let text = b"ab\ncd\nef";
        assert_eq!(line_column(text, 0), (1, 1));
        assert_eq!(line_column(text, 4), (2, 2));
        assert_eq!(line_column(text, 6), (3, 1));
    }
}
