//! Every object of every image, for the detector and its evaluation, and the
//! CSV files that carry them between stages.
//!
//! The lesson (`pascal-multi.ipynb`) writes two files with pandas:
//!
//! * `mbb.csv`, header `fn,bbox`: the 4 numbers `top left bottom right` of
//!   every non-ignored box of the image, in annotation order, space
//!   separated (`000017.jpg,61 184 198 278 77 89 335 402`), each number as
//!   `bb.csv` writes it ([`csv_export::format_bbox`]);
//! * `mc.csv`, header `fn,clas`: the image's class names, space separated.
//!   The lesson builds it from a Python `set`, whose order is arbitrary; here
//!   each class appears once, in order of first appearance among the boxes
//!   (`000023.jpg,bicycle person`).
//!
//! Two more files, in the same shapes, carry what the lesson keeps only in
//! memory or drops:
//!
//! * `mbb_classes.csv`, header `fn,clas`: the class of *each* box of
//!   `mbb.csv`, in the same order (`000023.jpg,bicycle bicycle person person
//!   person`), one row per row of `mbb.csv` (the lesson's per-box `mcs`,
//!   which the detector trains on). A separate file rather than a third
//!   column keeps `mbb.csv` byte for byte the lesson's.
//! * `mbb_difficult.csv` + `mbb_difficult_classes.csv`: the boxes flagged
//!   `ignore` / `<difficult>` (which `voc-annotations` drops, as the lesson
//!   does) and their classes, same format, one row per image that has at
//!   least one. VOC's metric needs them: a detection of a difficult object
//!   is neither rewarded nor penalised (`map.rs`).
//!
//! A box file and its classes file are written and read as a pair
//! ([`write_boxes`], [`read_boxes`]): the reader checks that both list the
//! same images in the same order with one class per box, and a refusal
//! names the file and line.
//!
//! Images without a non-ignored box are left out of `mbb.csv`, `mc.csv` and
//! `mbb_classes.csv` and counted (the lesson would fail on them; every VOC
//! 2007 train image has one), as `largest-object` leaves them out of
//! `bb.csv`. Class names are written space separated, so a class name with
//! whitespace (or an empty one) is refused.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};

use csv_export::{format_bbox, parse_bbox, read_rows, write_atomic, write_record, CsvError};
use voc_annotations::{BBox, Dataset, Object};

use crate::map::GroundTruth;

/// `mbb.csv`'s header (also the difficult boxes' file).
pub const MBB_HEADER: [&str; 2] = ["fn", "bbox"];
/// `mc.csv`'s header.
pub const MC_HEADER: [&str; 2] = ["fn", "clas"];
/// The per-box classes files' header (`mbb_classes.csv`, `mbb_difficult_classes.csv`).
pub const BOX_CLASSES_HEADER: [&str; 2] = ["fn", "clas"];

/// One image's boxes and the class of each, in annotation order.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageBoxes {
    pub file_name: String,
    /// `[top, left, bottom, right]`, inclusive pixels.
    pub boxes: Vec<BBox>,
    /// `classes[i]` is the class name of `boxes[i]`.
    pub classes: Vec<String>,
}

impl ImageBoxes {
    /// `mc.csv`'s classes: each once, in order of first appearance.
    pub fn distinct_classes(&self) -> Vec<&str> {
        let mut seen: Vec<&str> = Vec::new();
        for class in &self.classes {
            if !seen.contains(&class.as_str()) {
                seen.push(class);
            }
        }
        seen
    }
}

/// A row of `mbb.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct MbbRow {
    pub file_name: String,
    pub boxes: Vec<BBox>,
}

/// A row of `mc.csv` (or of a per-box classes file, where names repeat).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct McRow {
    pub file_name: String,
    pub classes: Vec<String>,
}

/// Every image's objects.
#[derive(Debug, Clone, PartialEq)]
pub struct MultiObjects {
    /// The class names in the dataset's category order: the detector's class
    /// `i` is `classes[i]` (the lesson's `id2cat`). Not written to any CSV.
    pub classes: Vec<String>,
    /// Images with at least one non-ignored box, in dataset order, with
    /// those boxes: `mbb.csv`, `mc.csv`, `mbb_classes.csv`.
    pub objects: Vec<ImageBoxes>,
    /// Images with at least one ignored (difficult) box, in dataset order,
    /// with only those boxes: `mbb_difficult.csv`, `mbb_difficult_classes.csv`.
    pub difficult: Vec<ImageBoxes>,
    /// Images left out of `objects` because they have no non-ignored box.
    pub images_without_box: usize,
}

/// Where [`MultiObjects::write_csvs`] writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CsvPaths {
    pub mbb: PathBuf,
    pub mc: PathBuf,
    pub mbb_classes: PathBuf,
    pub difficult_boxes: PathBuf,
    pub difficult_classes: PathBuf,
}

impl CsvPaths {
    /// The usual names inside `dir`: `mbb.csv`, `mc.csv`, `mbb_classes.csv`,
    /// `mbb_difficult.csv`, `mbb_difficult_classes.csv`.
    pub fn in_dir(dir: &Path) -> Self {
        CsvPaths {
            mbb: dir.join("mbb.csv"),
            mc: dir.join("mc.csv"),
            mbb_classes: dir.join("mbb_classes.csv"),
            difficult_boxes: dir.join("mbb_difficult.csv"),
            difficult_classes: dir.join("mbb_difficult_classes.csv"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MultiObjectsError {
    #[error("image {file_name}: object has category id {category_id}, which the dataset does not define")]
    UnknownCategory { file_name: String, category_id: u32 },
    #[error("category {name:?}: {reason}")]
    BadClassName { name: String, reason: String },
    #[error("the difficult boxes are given for {given} images, but the dataset has {images}")]
    DifficultCount { given: usize, images: usize },
    #[error("none of the {images} images has a usable box: no rows for mbb.csv and mc.csv")]
    NoUsableBox { images: usize },
}

/// Why a class name cannot be written space separated, if it cannot.
pub fn class_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.chars().any(char::is_whitespace) {
        Some("has whitespace, but classes are written space separated")
    } else {
        None
    }
}

/// Every image's objects from `dataset` (which holds the non-ignored boxes)
/// and `difficult`, the ignored boxes of each of its images in the same
/// order (from `crate::difficult`, or empty vectors where unknown).
pub fn multi_objects(
    dataset: &Dataset,
    difficult: &[Vec<Object>],
) -> Result<MultiObjects, MultiObjectsError> {
    if difficult.len() != dataset.images.len() {
        return Err(MultiObjectsError::DifficultCount {
            given: difficult.len(),
            images: dataset.images.len(),
        });
    }
    for c in &dataset.categories {
        if let Some(reason) = class_name_problem(&c.name) {
            return Err(MultiObjectsError::BadClassName {
                name: c.name.clone(),
                reason: reason.to_owned(),
            });
        }
    }
    let names: HashMap<u32, &str> = dataset
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    let image_boxes = |file_name: &str, objects: &[Object]| {
        let classes = objects
            .iter()
            .map(|o| {
                names
                    .get(&o.category_id)
                    .map(|&name| name.to_owned())
                    .ok_or_else(|| MultiObjectsError::UnknownCategory {
                        file_name: file_name.to_owned(),
                        category_id: o.category_id,
                    })
            })
            .collect::<Result<Vec<String>, _>>()?;
        Ok(ImageBoxes {
            file_name: file_name.to_owned(),
            boxes: objects.iter().map(|o| o.bbox).collect(),
            classes,
        })
    };
    let mut result = MultiObjects {
        classes: dataset.categories.iter().map(|c| c.name.clone()).collect(),
        objects: Vec::with_capacity(dataset.images.len()),
        difficult: Vec::new(),
        images_without_box: 0,
    };
    for (image, ignored) in dataset.images.iter().zip(difficult) {
        if image.objects.is_empty() {
            result.images_without_box += 1;
            tracing::warn!(
                "image {} (id {}) has no usable box; left out of mbb.csv and mc.csv",
                image.file_name,
                image.id
            );
        } else {
            result
                .objects
                .push(image_boxes(&image.file_name, &image.objects)?);
        }
        if !ignored.is_empty() {
            result
                .difficult
                .push(image_boxes(&image.file_name, ignored)?);
        }
    }
    if result.objects.is_empty() {
        return Err(MultiObjectsError::NoUsableBox {
            images: dataset.images.len(),
        });
    }
    if result.images_without_box > 0 {
        tracing::warn!(
            "{} of {} images have no usable box",
            result.images_without_box,
            dataset.images.len()
        );
    }
    Ok(result)
}

impl MultiObjects {
    /// Rows of `mc.csv`.
    pub fn mc_rows(&self) -> Vec<McRow> {
        self.objects
            .iter()
            .map(|image| McRow {
                file_name: image.file_name.clone(),
                classes: image
                    .distinct_classes()
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })
            .collect()
    }

    /// Writes all five files, each atomically.
    pub fn write_csvs(&self, paths: &CsvPaths) -> Result<(), CsvError> {
        write_boxes(&paths.mbb, &paths.mbb_classes, &self.objects)?;
        write_mc(&paths.mc, &self.mc_rows())?;
        write_boxes(
            &paths.difficult_boxes,
            &paths.difficult_classes,
            &self.difficult,
        )
    }
}

/// A box list as `mbb.csv` writes it: each box's 4 numbers, all space separated.
pub fn format_boxes(boxes: &[BBox]) -> String {
    boxes.iter().map(format_bbox).collect::<Vec<_>>().join(" ")
}

/// Parses a box list written by [`format_boxes`]: at least one box, each
/// checked by [`csv_export::parse_bbox`].
pub fn parse_boxes(text: &str) -> Result<Vec<BBox>, String> {
    if text.is_empty() {
        return Err("no box".to_owned());
    }
    let numbers = text.split(' ').count();
    if numbers / 4 * 4 != numbers {
        return Err(format!(
            "{numbers} numbers, not a multiple of 4 (top left bottom right per box)"
        ));
    }
    // Byte offsets of every 4th space: each box is the text between them.
    let mut cuts = vec![0];
    cuts.extend(
        text.match_indices(' ')
            .map(|(i, _)| i)
            .skip(3)
            .step_by(4)
            .map(|i| i + 1),
    );
    cuts.push(text.len() + 1);
    cuts.windows(2)
        .enumerate()
        .map(|(n, w)| parse_bbox(&text[w[0]..w[1] - 1]).map_err(|e| format!("box #{}: {e}", n + 1)))
        .collect()
}

/// Parses space-separated class names (at least one).
fn parse_classes(text: &str) -> Result<Vec<String>, String> {
    if text.is_empty() {
        return Err("no class".to_owned());
    }
    text.split(' ')
        .map(|name| match class_name_problem(name) {
            None => Ok(name.to_owned()),
            Some(_) => Err(format!(
                "classes {text:?}: an empty class name (classes are separated by single spaces)"
            )),
        })
        .collect()
}

fn invalid_input(path: &Path, message: String) -> CsvError {
    CsvError::Io {
        path: path.to_owned(),
        source: io::Error::new(io::ErrorKind::InvalidInput, message),
    }
}

fn io_error(path: &Path) -> impl Fn(io::Error) -> CsvError + '_ {
    move |source| CsvError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Checks one image's classes before they are written.
fn check_classes(path: &Path, file_name: &str, classes: &[String]) -> Result<(), CsvError> {
    for class in classes {
        if let Some(reason) = class_name_problem(class) {
            return Err(invalid_input(
                path,
                format!("image {file_name}: class {class:?} {reason}"),
            ));
        }
    }
    Ok(())
}

/// Writes a box file (`mbb.csv`'s format) and its per-box classes file,
/// each atomically. Refused before writing, naming the file: an image whose
/// class count differs from its box count, without boxes, or with a class
/// name [`class_name_problem`] refuses.
pub fn write_boxes(
    boxes_csv: &Path,
    classes_csv: &Path,
    images: &[ImageBoxes],
) -> Result<(), CsvError> {
    for image in images {
        if image.boxes.is_empty() {
            return Err(invalid_input(
                boxes_csv,
                format!("image {}: no box to write", image.file_name),
            ));
        }
        if image.classes.len() != image.boxes.len() {
            return Err(invalid_input(
                classes_csv,
                format!(
                    "image {}: {} classes for {} boxes",
                    image.file_name,
                    image.classes.len(),
                    image.boxes.len()
                ),
            ));
        }
        check_classes(classes_csv, &image.file_name, &image.classes)?;
    }
    write_atomic(boxes_csv, |out| {
        write_record(out, &MBB_HEADER)?;
        for image in images {
            write_record(out, &[&image.file_name, &format_boxes(&image.boxes)])?;
        }
        Ok(())
    })
    .map_err(io_error(boxes_csv))?;
    write_atomic(classes_csv, |out| {
        write_record(out, &BOX_CLASSES_HEADER)?;
        for image in images {
            write_record(out, &[&image.file_name, &image.classes.join(" ")])?;
        }
        Ok(())
    })
    .map_err(io_error(classes_csv))
}

/// Writes `mc.csv` atomically; a row with no class, a repeated class or a
/// class name [`class_name_problem`] refuses is refused before writing.
pub fn write_mc(path: &Path, rows: &[McRow]) -> Result<(), CsvError> {
    for row in rows {
        if row.classes.is_empty() {
            return Err(invalid_input(
                path,
                format!("image {}: no class to write", row.file_name),
            ));
        }
        check_classes(path, &row.file_name, &row.classes)?;
        if let Some(repeated) = first_repeated(&row.classes) {
            return Err(invalid_input(
                path,
                format!("image {}: class {repeated:?} twice", row.file_name),
            ));
        }
    }
    let joined: Vec<String> = rows.iter().map(|r| r.classes.join(" ")).collect();
    csv_export::write_rows(
        path,
        MC_HEADER,
        rows.iter()
            .zip(&joined)
            .map(|(r, classes)| [r.file_name.as_str(), classes.as_str()]),
    )
}

fn first_repeated(classes: &[String]) -> Option<&str> {
    classes
        .iter()
        .enumerate()
        .find(|(i, c)| classes[..*i].contains(c))
        .map(|(_, c)| c.as_str())
}

/// Reads `mbb.csv` (or a difficult boxes file), checking every row.
pub fn read_mbb(path: &Path) -> Result<Vec<MbbRow>, CsvError> {
    read_rows(path, MBB_HEADER, |[file_name, bbox]| {
        Ok(MbbRow {
            file_name: file_name.to_owned(),
            boxes: parse_boxes(bbox)?,
        })
    })
}

/// Reads `mc.csv`: at least one class per row, none twice.
pub fn read_mc(path: &Path) -> Result<Vec<McRow>, CsvError> {
    read_rows(path, MC_HEADER, |[file_name, clas]| {
        let classes = parse_classes(clas)?;
        if let Some(repeated) = first_repeated(&classes) {
            return Err(format!("class {repeated:?} twice"));
        }
        Ok(McRow {
            file_name: file_name.to_owned(),
            classes,
        })
    })
}

/// Reads a box file and its per-box classes file (as [`write_boxes`] writes
/// them), checking that row `i` of both names the same image and that it
/// has one class per box; a mismatch is placed at its line of `classes_csv`.
pub fn read_boxes(boxes_csv: &Path, classes_csv: &Path) -> Result<Vec<ImageBoxes>, CsvError> {
    let box_rows = read_mbb(boxes_csv)?;
    let box_row_count = box_rows.len();
    let mut box_rows = box_rows.into_iter().enumerate();
    let images = read_rows(classes_csv, BOX_CLASSES_HEADER, |[file_name, clas]| {
        let Some((index, row)) = box_rows.next() else {
            return Err(format!(
                "a row more than {} has ({box_row_count})",
                boxes_csv.display()
            ));
        };
        if row.file_name != file_name {
            return Err(format!(
                "image {file_name:?}, but row {} of {} is {:?}",
                index + 1,
                boxes_csv.display(),
                row.file_name
            ));
        }
        let classes = parse_classes(clas)?;
        if classes.len() != row.boxes.len() {
            return Err(format!(
                "{} classes for the {} boxes of {file_name} in {}",
                classes.len(),
                row.boxes.len(),
                boxes_csv.display()
            ));
        }
        Ok(ImageBoxes {
            file_name: row.file_name,
            boxes: row.boxes,
            classes,
        })
    })?;
    if images.len() < box_row_count {
        let text = std::fs::read(classes_csv).map_err(io_error(classes_csv))?;
        let lines = text.iter().filter(|&&b| b == b'\n').count() as u64;
        return Err(CsvError::BadRow {
            path: classes_csv.to_owned(),
            line: lines + 1,
            message: format!(
                "ends after {} rows, but {} has {box_row_count}",
                images.len(),
                boxes_csv.display()
            ),
        });
    }
    Ok(images)
}

/// The ground truths of the images named in `images` (image `i` of the
/// result is `images[i]`), for `map::evaluate`: their boxes in `objects`
/// and their difficult boxes in `difficult`, classes numbered by their
/// position in `classes`. Images of `objects`/`difficult` not in `images`
/// (e.g. the training split) are left out.
pub fn ground_truths(
    images: &[&str],
    objects: &[ImageBoxes],
    difficult: &[ImageBoxes],
    classes: &[String],
) -> Result<Vec<GroundTruth>, String> {
    let image_index: HashMap<&str, usize> =
        images.iter().enumerate().map(|(i, &f)| (f, i)).collect();
    let class_index: HashMap<&str, usize> = classes
        .iter()
        .enumerate()
        .map(|(i, c)| (c.as_str(), i))
        .collect();
    let mut out = Vec::new();
    for (set, is_difficult) in [(objects, false), (difficult, true)] {
        for image in set {
            let Some(&index) = image_index.get(image.file_name.as_str()) else {
                continue;
            };
            for (bbox, class) in image.boxes.iter().zip(&image.classes) {
                let &class = class_index.get(class.as_str()).ok_or_else(|| {
                    format!(
                        "image {}: class {class:?} is not one of the {} classes",
                        image.file_name,
                        classes.len()
                    )
                })?;
                out.push(GroundTruth {
                    image: index,
                    class,
                    bbox: *bbox,
                    difficult: is_difficult,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use voc_annotations::{Category, ImageInfo, LoadStats};

    fn object(bbox: BBox, category_id: u32) -> Object {
        Object { bbox, category_id }
    }

    fn dataset(images: Vec<(&str, Vec<Object>)>) -> Dataset {
        Dataset {
            images: images
                .into_iter()
                .zip(1..)
                .map(|((name, objects), id)| ImageInfo {
                    id,
                    file_name: name.into(),
                    width: 500,
                    height: 500,
                    objects,
                })
                .collect(),
            categories: ["bicycle", "car", "person"]
                .iter()
                .zip(1..)
                .map(|(name, id)| Category {
                    id,
                    name: (*name).into(),
                })
                .collect(),
            stats: LoadStats::default(),
        }
    }

    fn image(file_name: &str, boxes: &[BBox], classes: &[&str]) -> ImageBoxes {
        ImageBoxes {
            file_name: file_name.into(),
            boxes: boxes.to_vec(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        }
    }

    /// The lesson's 000023.jpg: bicycle, bicycle, person, person, person, and a difficult bicycle.
    fn lesson_like() -> (Dataset, Vec<Vec<Object>>) {
        let ds = dataset(vec![
            ("000012.jpg", vec![object([96.0, 155.0, 269.0, 350.0], 2)]),
            (
                "000023.jpg",
                vec![
                    object([229.0, 8.0, 499.0, 244.0], 1),
                    object([219.0, 229.0, 499.0, 333.0], 1),
                    object([0.0, 1.0, 368.0, 116.0], 3),
                    object([1.0, 2.0, 461.0, 242.0], 3),
                    object([0.0, 224.0, 485.0, 333.0], 3),
                ],
            ),
            ("empty.jpg", vec![]),
        ]);
        let difficult = vec![
            vec![],
            vec![object([177.0, 1.0, 499.0, 89.0], 1)],
            vec![object([1.0, 2.0, 3.0, 4.0], 3)],
        ];
        (ds, difficult)
    }

    #[test]
    fn objects_classes_and_difficult_boxes_per_image() {
        let (ds, difficult) = lesson_like();
        let multi = multi_objects(&ds, &difficult).unwrap();
        assert_eq!(multi.classes, ["bicycle", "car", "person"]);
        assert_eq!(multi.images_without_box, 1);
        assert_eq!(multi.objects.len(), 2);
        assert_eq!(
            multi.objects[1].classes,
            ["bicycle", "bicycle", "person", "person", "person"]
        );
        assert_eq!(multi.objects[1].distinct_classes(), ["bicycle", "person"]);
        // Difficult boxes: every image that has one, even without usable boxes.
        assert_eq!(
            multi.difficult,
            [
                image("000023.jpg", &[[177.0, 1.0, 499.0, 89.0]], &["bicycle"]),
                image("empty.jpg", &[[1.0, 2.0, 3.0, 4.0]], &["person"]),
            ]
        );
        assert_eq!(
            multi.mc_rows()[1],
            McRow {
                file_name: "000023.jpg".into(),
                classes: vec!["bicycle".into(), "person".into()]
            }
        );
    }

    #[test]
    fn written_files_have_the_lessons_format_and_read_back() {
        let (ds, difficult) = lesson_like();
        let multi = multi_objects(&ds, &difficult).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = CsvPaths::in_dir(dir.path());
        multi.write_csvs(&paths).unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(&paths.mbb),
            "fn,bbox\n000012.jpg,96 155 269 350\n\
             000023.jpg,229 8 499 244 219 229 499 333 0 1 368 116 1 2 461 242 0 224 485 333\n"
        );
        assert_eq!(
            read(&paths.mc),
            "fn,clas\n000012.jpg,car\n000023.jpg,bicycle person\n"
        );
        assert_eq!(
            read(&paths.mbb_classes),
            "fn,clas\n000012.jpg,car\n000023.jpg,bicycle bicycle person person person\n"
        );
        assert_eq!(
            read(&paths.difficult_boxes),
            "fn,bbox\n000023.jpg,177 1 499 89\nempty.jpg,1 2 3 4\n"
        );
        assert_eq!(
            read(&paths.difficult_classes),
            "fn,clas\n000023.jpg,bicycle\nempty.jpg,person\n"
        );
        assert_eq!(
            read_boxes(&paths.mbb, &paths.mbb_classes).unwrap(),
            multi.objects
        );
        assert_eq!(
            read_boxes(&paths.difficult_boxes, &paths.difficult_classes).unwrap(),
            multi.difficult
        );
        assert_eq!(read_mc(&paths.mc).unwrap(), multi.mc_rows());
        let mbb = read_mbb(&paths.mbb).unwrap();
        assert_eq!(mbb[1].boxes, multi.objects[1].boxes);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(
            names,
            [
                "mbb.csv",
                "mbb_classes.csv",
                "mbb_difficult.csv",
                "mbb_difficult_classes.csv",
                "mc.csv"
            ],
            "no temp files left"
        );
    }

    #[test]
    fn an_empty_difficult_set_writes_header_only_files_that_read_back_empty() {
        let ds = dataset(vec![("a.jpg", vec![object([0.0, 0.0, 1.0, 1.0], 2)])]);
        let multi = multi_objects(&ds, &[vec![]]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let paths = CsvPaths::in_dir(dir.path());
        multi.write_csvs(&paths).unwrap();
        assert_eq!(
            std::fs::read_to_string(&paths.difficult_boxes).unwrap(),
            "fn,bbox\n"
        );
        assert!(read_boxes(&paths.difficult_boxes, &paths.difficult_classes)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn fractional_and_quoted_values_round_trip() {
        let images = [image(
            "odd, \"name\".jpg",
            &[[0.5, 1.25, 3.0, 4.0], [0.0, 0.0, 0.0, 0.0]],
            &["car", "car"],
        )];
        let dir = tempfile::tempdir().unwrap();
        let (b, c) = (dir.path().join("b.csv"), dir.path().join("c.csv"));
        write_boxes(&b, &c, &images).unwrap();
        assert_eq!(
            std::fs::read_to_string(&b).unwrap(),
            "fn,bbox\n\"odd, \"\"name\"\".jpg\",0.5 1.25 3 4 0 0 0 0\n"
        );
        assert_eq!(read_boxes(&b, &c).unwrap(), images);
    }

    #[test]
    fn parse_boxes_cases() {
        assert_eq!(
            parse_boxes("1 2 3 4 5 6 7 8"),
            Ok(vec![[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0]])
        );
        assert_eq!(
            parse_boxes("96 155 269 350"),
            Ok(vec![[96.0, 155.0, 269.0, 350.0]])
        );
        for (bad, why) in [
            ("", "no box"),
            ("1 2 3", "3 numbers"),
            ("1 2 3 4 5", "5 numbers"),
            ("1 2 3 4 5 6 x 8", "box #2"),
            ("1 2 3 4 9 6 7 8", "box #2"),
            ("1 2 3 4  5 6 7", "box #2"),
            ("1 2 3 4 ", "5 numbers"),
        ] {
            let err = parse_boxes(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert_eq!(
            format_boxes(&[[1.0, 2.0, 3.0, 4.0], [0.5, 6.0, 7.0, 8.0]]),
            "1 2 3 4 0.5 6 7 8"
        );
    }

    #[test]
    fn readers_name_file_and_line_of_a_bad_row() {
        let cases: &[(&str, &str, u64, &str)] = &[
            (
                "fn,bbox\na.jpg,1 2 3 4\nb.jpg,1 2 3\n",
                "fn,clas\na.jpg,car\nb.jpg,car\n",
                3,
                "3 numbers",
            ),
            (
                "fn,bbox\na.jpg,1 2 3 4\nb.jpg,\n",
                "fn,clas\na.jpg,car\nb.jpg,car\n",
                3,
                "no box",
            ),
            (
                "fn,box\na.jpg,1 2 3 4\n",
                "fn,clas\na.jpg,car\n",
                1,
                "header",
            ),
        ];
        for &(boxes, classes, line, message) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (b, c) = (
                dir.path().join("mbb.csv"),
                dir.path().join("mbb_classes.csv"),
            );
            std::fs::write(&b, boxes).unwrap();
            std::fs::write(&c, classes).unwrap();
            let err = read_boxes(&b, &c).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{}:{line}: ", b.display())) && err.contains(message),
                "{boxes:?}: {err}"
            );
        }
    }

    #[test]
    fn a_classes_file_that_does_not_pair_with_its_boxes_is_refused_at_its_line() {
        let boxes = "fn,bbox\na.jpg,1 2 3 4\nb.jpg,1 2 3 4 5 6 7 8\n";
        let cases: &[(&str, u64, &str)] = &[
            (
                "fn,clas\na.jpg,car\nb.jpg,car\n",
                3,
                "1 classes for the 2 boxes of b.jpg",
            ),
            (
                "fn,clas\na.jpg,car\nc.jpg,car car\n",
                3,
                "image \"c.jpg\", but row 2 of",
            ),
            ("fn,clas\na.jpg,car\n", 3, "ends after 1 rows, but"),
            (
                "fn,clas\na.jpg,car\nb.jpg,car car\nc.jpg,car\n",
                4,
                "a row more than",
            ),
            (
                "fn,clas\na.jpg,car\nb.jpg,car  car\n",
                3,
                "empty class name",
            ),
            ("fn,clas\na.jpg,\nb.jpg,car car\n", 2, "no class"),
            ("fn,cat\na.jpg,car\nb.jpg,car car\n", 1, "header"),
        ];
        for &(classes, line, message) in cases {
            let dir = tempfile::tempdir().unwrap();
            let (b, c) = (
                dir.path().join("mbb.csv"),
                dir.path().join("mbb_classes.csv"),
            );
            std::fs::write(&b, boxes).unwrap();
            std::fs::write(&c, classes).unwrap();
            let err = read_boxes(&b, &c).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{}:{line}: ", c.display())) && err.contains(message),
                "{classes:?}: {err}"
            );
        }
    }

    #[test]
    fn mc_reader_refuses_repeats_and_empty_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mc.csv");
        for (text, line, message) in [
            (
                "fn,clas\na.jpg,car person\nb.jpg,car car\n",
                3,
                "class \"car\" twice",
            ),
            ("fn,clas\na.jpg,\n", 2, "no class"),
            ("fn,clas\n../a.jpg,car\n", 2, "`..` component"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = read_mc(&path).unwrap_err().to_string();
            assert!(
                err.starts_with(&format!("{}:{line}: ", path.display())) && err.contains(message),
                "{text:?}: {err}"
            );
        }
        std::fs::write(&path, "fn,clas\na.jpg,car person\n").unwrap();
        assert_eq!(read_mc(&path).unwrap()[0].classes, ["car", "person"]);
    }

    #[test]
    fn writers_refuse_what_would_not_read_back_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let (b, c) = (
            dir.path().join("mbb.csv"),
            dir.path().join("mbb_classes.csv"),
        );
        let one = [[0.0, 0.0, 1.0, 1.0]];
        for (images, file, message) in [
            (
                vec![image("a.jpg", &one, &["car", "car"])],
                &c,
                "2 classes for 1 boxes",
            ),
            (vec![image("a.jpg", &[], &[])], &b, "no box"),
            (
                vec![image("a.jpg", &one, &["dining table"])],
                &c,
                "has whitespace",
            ),
            (vec![image("a.jpg", &one, &[""])], &c, "is empty"),
        ] {
            let err = write_boxes(&b, &c, &images).unwrap_err().to_string();
            assert!(
                err.starts_with(&file.display().to_string()) && err.contains(message),
                "{err}"
            );
        }
        assert!(!b.exists() && !c.exists(), "nothing written");
        let mc = dir.path().join("mc.csv");
        let row = |classes: &[&str]| McRow {
            file_name: "a.jpg".into(),
            classes: classes.iter().map(|c| (*c).to_owned()).collect(),
        };
        for (rows, message) in [
            (vec![row(&["car", "car"])], "twice"),
            (vec![row(&[])], "no class"),
        ] {
            let err = write_mc(&mc, &rows).unwrap_err().to_string();
            assert!(err.contains(message), "{err}");
        }
    }

    #[test]
    fn datasets_that_cannot_be_written_are_refused() {
        let (ds, difficult) = lesson_like();
        let err = multi_objects(&ds, &difficult[..2]).unwrap_err().to_string();
        assert!(
            err.contains("given for 2 images, but the dataset has 3"),
            "{err}"
        );
        let mut spaced = ds.clone();
        spaced.categories[1].name = "dining table".into();
        let err = multi_objects(&spaced, &difficult).unwrap_err().to_string();
        assert!(
            err.contains("\"dining table\"") && err.contains("whitespace"),
            "{err}"
        );
        let mut unknown = ds.clone();
        unknown.images[0].objects[0].category_id = 9;
        let err = multi_objects(&unknown, &difficult).unwrap_err().to_string();
        assert!(
            err.contains("000012.jpg") && err.contains("category id 9"),
            "{err}"
        );
        let empty = dataset(vec![("a.jpg", vec![])]);
        let err = multi_objects(&empty, &[vec![]]).unwrap_err().to_string();
        assert!(err.contains("none of the 1 images"), "{err}");
    }

    #[test]
    fn ground_truths_for_evaluation() {
        let (ds, difficult) = lesson_like();
        let multi = multi_objects(&ds, &difficult).unwrap();
        // Evaluate on 000023.jpg only, as image 0.
        let truths = ground_truths(
            &["000023.jpg"],
            &multi.objects,
            &multi.difficult,
            &multi.classes,
        )
        .unwrap();
        assert_eq!(truths.len(), 6);
        assert!(truths.iter().all(|g| g.image == 0));
        assert_eq!(
            truths
                .iter()
                .map(|g| (g.class, g.difficult))
                .collect::<Vec<_>>(),
            [
                (0, false),
                (0, false),
                (2, false),
                (2, false),
                (2, false),
                (0, true)
            ]
        );
        assert_eq!(truths[5].bbox, [177.0, 1.0, 499.0, 89.0]);
        let err = ground_truths(
            &["000012.jpg"],
            &multi.objects,
            &[],
            &["bicycle".to_owned()],
        )
        .unwrap_err();
        assert!(
            err.contains("000012.jpg") && err.contains("\"car\""),
            "{err}"
        );
    }
}
