//! The boxes flagged `ignore` (the lesson's JSON) or `<difficult>` (VOC XML),
//! which `voc-annotations` drops as the lesson does, read again from the same
//! source for VOC's metric (`map.rs`), which must know them to ignore the
//! detections they absorb.
//!
//! `voc-annotations` keeps only their count ([`voc_annotations::LoadStats::ignored`]);
//! these functions read the source a second time for the boxes themselves
//! and return them per image of the [`Dataset`] loaded from it (same order),
//! converted as `voc-annotations` converts every box: COCO `[x, y, w, h]` to
//! `[top, left, bottom, right]` by [`voc_annotations::hw_bb`], then clamped
//! to the image where it sticks out. The loader has already checked these
//! boxes (it refuses a bad box even when flagged), so with the dataset
//! loaded from the same file nothing here fails; the checks that remain
//! catch a dataset and a file that do not belong together, and the count of
//! boxes found must equal the dataset's `stats.ignored`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use voc_annotations::{hw_bb, parse_voc_xml, AnnotationError, BBox, Dataset, ImageInfo, Object};

#[derive(Debug, thiserror::Error)]
pub enum DifficultError {
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}:{column}: malformed JSON: {message}", path.display())]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(transparent)]
    Annotation(#[from] AnnotationError),
    /// The file does not describe the dataset it was given with.
    #[error("{}: {message}", path.display())]
    Mismatch { path: PathBuf, message: String },
}

#[derive(Deserialize)]
struct CocoFile {
    annotations: Vec<CocoAnnotation>,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    category_id: u32,
    bbox: [f32; 4],
    #[serde(default, deserialize_with = "flag")]
    ignore: bool,
}

/// `ignore` is `0`/`1` in the lesson's file; `true`/`false` are accepted as
/// `voc-annotations` accepts them.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flag {
        Bool(bool),
        Number(i64),
    }
    match Flag::deserialize(d)? {
        Flag::Bool(b) => Ok(b),
        Flag::Number(0) => Ok(false),
        Flag::Number(1) => Ok(true),
        Flag::Number(n) => Err(serde::de::Error::custom(format!(
            "ignore = {n}, expected 0, 1, true or false"
        ))),
    }
}

/// The box as `voc-annotations` keeps it: converted, clamped to the image;
/// `None` when nothing of it lies inside (the loader refuses such a box).
fn clamped_box(xywh: [f32; 4], image: &ImageInfo) -> Option<BBox> {
    let [top, left, bottom, right] = hw_bb(xywh);
    let (max_y, max_x) = (image.height as f32 - 1.0, image.width as f32 - 1.0);
    let inside = xywh.iter().all(|v| v.is_finite())
        && top <= bottom
        && left <= right
        && top <= max_y
        && left <= max_x
        && bottom >= 0.0
        && right >= 0.0;
    inside.then(|| {
        [
            top.max(0.0),
            left.max(0.0),
            bottom.min(max_y),
            right.min(max_x),
        ]
    })
}

fn check_count(
    found: &[Vec<Object>],
    dataset: &Dataset,
    path: &Path,
) -> Result<(), DifficultError> {
    let count: usize = found.iter().map(Vec::len).sum();
    if count != dataset.stats.ignored {
        return Err(DifficultError::Mismatch {
            path: path.to_owned(),
            message: format!(
                "{count} ignored boxes here, but the dataset dropped {}: not the file it was loaded from",
                dataset.stats.ignored
            ),
        });
    }
    Ok(())
}

/// The `ignore` boxes of the lesson's COCO-style JSON, per image of
/// `dataset` (loaded from the same file by `voc_annotations::load_coco_json`).
pub fn difficult_from_coco_json(
    path: &Path,
    dataset: &Dataset,
) -> Result<Vec<Vec<Object>>, DifficultError> {
    let bytes = std::fs::read(path).map_err(|source| DifficultError::Io {
        path: path.to_owned(),
        source,
    })?;
    let file: CocoFile = serde_json::from_slice(&bytes).map_err(|e| DifficultError::Json {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let index: HashMap<u64, usize> = dataset
        .images
        .iter()
        .enumerate()
        .map(|(i, image)| (image.id, i))
        .collect();
    let mismatch = |message: String| DifficultError::Mismatch {
        path: path.to_owned(),
        message,
    };
    let mut found = vec![Vec::new(); dataset.images.len()];
    for (n, a) in file
        .annotations
        .iter()
        .enumerate()
        .filter(|(_, a)| a.ignore)
    {
        let &at = index.get(&a.image_id).ok_or_else(|| {
            mismatch(format!(
                "annotation #{n} names image id {}, which the dataset does not have",
                a.image_id
            ))
        })?;
        let image = &dataset.images[at];
        let bbox = clamped_box(a.bbox, image).ok_or_else(|| {
            mismatch(format!(
                "annotation #{n}: box [x, y, w, h] = {:?} is empty or outside its {}x{} image {}",
                a.bbox, image.width, image.height, image.file_name
            ))
        })?;
        found[at].push(Object {
            bbox,
            category_id: a.category_id,
        });
    }
    check_count(&found, dataset, path)?;
    Ok(found)
}

/// The `<difficult>` boxes of the VOC devkit's XML files listed in
/// `<voc_dir>/ImageSets/Main/<split>.txt`, per image of `dataset` (loaded
/// from the same list by `voc_annotations::load_voc_xml`).
pub fn difficult_from_voc_xml(
    voc_dir: &Path,
    split: &str,
    dataset: &Dataset,
) -> Result<Vec<Vec<Object>>, DifficultError> {
    let list_path = voc_dir
        .join("ImageSets")
        .join("Main")
        .join(format!("{split}.txt"));
    let list = std::fs::read_to_string(&list_path).map_err(|source| DifficultError::Io {
        path: list_path.clone(),
        source,
    })?;
    // The loader's reading of the list: the first word of each non-blank line.
    let stems: Vec<&str> = list
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    if stems.len() != dataset.images.len() {
        return Err(DifficultError::Mismatch {
            path: list_path,
            message: format!(
                "lists {} images, but the dataset has {}",
                stems.len(),
                dataset.images.len()
            ),
        });
    }
    let category_ids: HashMap<&str, u32> = dataset
        .categories
        .iter()
        .map(|c| (c.name.as_str(), c.id))
        .collect();
    let mut found = Vec::with_capacity(stems.len());
    for (stem, image) in stems.iter().zip(&dataset.images) {
        let xml_path = voc_dir.join("Annotations").join(format!("{stem}.xml"));
        let mismatch = |message: String| DifficultError::Mismatch {
            path: xml_path.clone(),
            message,
        };
        if stem.replace('_', "").parse::<u64>().ok() != Some(image.id) {
            return Err(mismatch(format!(
                "listed where the dataset has image id {} ({})",
                image.id, image.file_name
            )));
        }
        let bytes = std::fs::read(&xml_path).map_err(|source| DifficultError::Io {
            path: xml_path.clone(),
            source,
        })?;
        let parsed = parse_voc_xml(&bytes, &xml_path)?;
        let mut objects = Vec::new();
        for o in parsed.objects.iter().filter(|o| o.difficult) {
            let what = format!("object on line {}", o.line);
            let &category_id = category_ids.get(o.name.as_str()).ok_or_else(|| {
                mismatch(format!("{what}: class {:?} is not in the dataset", o.name))
            })?;
            let bbox = clamped_box(o.xywh(), image).ok_or_else(|| {
                mismatch(format!(
                    "{what}: box is empty or outside its {}x{} image",
                    image.width, image.height
                ))
            })?;
            objects.push(Object { bbox, category_id });
        }
        found.push(objects);
    }
    check_count(&found, dataset, &list_path)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use voc_annotations::{load_coco_json, load_voc_xml};

    const JSON: &str = r#"{
        "images": [
            {"file_name": "a.jpg", "height": 100, "width": 200, "id": 1},
            {"file_name": "b.jpg", "height": 50, "width": 50, "id": 2}
        ],
        "annotations": [
            {"image_id": 1, "bbox": [10, 20, 30, 40], "category_id": 1, "id": 1, "ignore": 0},
            {"image_id": 1, "bbox": [0, 0, 5, 5], "category_id": 2, "id": 2, "ignore": 1},
            {"image_id": 2, "bbox": [40, 40, 20, 20], "category_id": 1, "id": 3, "ignore": true},
            {"image_id": 2, "bbox": [1, 1, 2, 2], "category_id": 2, "id": 4}
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "dog"}]
    }"#;

    #[test]
    fn json_ignored_boxes_per_image_converted_and_clamped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, JSON).unwrap();
        let dataset = load_coco_json(&path).unwrap();
        let difficult = difficult_from_coco_json(&path, &dataset).unwrap();
        assert_eq!(
            difficult,
            [
                vec![Object {
                    bbox: [0.0, 0.0, 4.0, 4.0],
                    category_id: 2
                }],
                // [40, 40, 20, 20] is [40, 40, 59, 59], clamped to the 50x50 image.
                vec![Object {
                    bbox: [40.0, 40.0, 49.0, 49.0],
                    category_id: 1
                }],
            ]
        );
    }

    #[test]
    fn a_json_that_is_not_the_datasets_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        std::fs::write(&path, JSON).unwrap();
        let dataset = load_coco_json(&path).unwrap();
        let other = dir.path().join("other.json");
        std::fs::write(
            &other,
            JSON.replace("\"ignore\": true", "\"ignore\": false"),
        )
        .unwrap();
        let err = difficult_from_coco_json(&other, &dataset)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&other.display().to_string())
                && err.contains("1 ignored boxes here, but the dataset dropped 2"),
            "{err}"
        );
        std::fs::write(
            &other,
            JSON.replace(
                "\"image_id\": 2, \"bbox\": [40",
                "\"image_id\": 7, \"bbox\": [40",
            ),
        )
        .unwrap();
        let err = difficult_from_coco_json(&other, &dataset)
            .unwrap_err()
            .to_string();
        assert!(err.contains("image id 7"), "{err}");
        std::fs::write(&other, "{\"annotations\": [}").unwrap();
        let err = difficult_from_coco_json(&other, &dataset)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("{}:1:", other.display())) && err.contains("malformed JSON"),
            "{err}"
        );
        std::fs::write(&other, JSON.replace("\"ignore\": true", "\"ignore\": 2")).unwrap();
        let err = difficult_from_coco_json(&other, &dataset)
            .unwrap_err()
            .to_string();
        assert!(err.contains("ignore = 2"), "{err}");
        let err = difficult_from_coco_json(&dir.path().join("missing.json"), &dataset)
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing.json: cannot read"), "{err}");
    }

    fn xml(file_name: &str, objects: &[(&str, bool, [u32; 4])]) -> String {
        let objects: String = objects
            .iter()
            .map(|(name, difficult, [xmin, ymin, xmax, ymax])| {
                format!(
                    "<object><name>{name}</name><difficult>{}</difficult><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>",
                    u8::from(*difficult)
                )
            })
            .collect();
        format!("<annotation><filename>{file_name}</filename><size><width>100</width><height>80</height><depth>3</depth></size>{objects}</annotation>")
    }

    #[test]
    fn xml_difficult_boxes_per_image() {
        let dir = tempfile::tempdir().unwrap();
        let voc = dir.path();
        std::fs::create_dir_all(voc.join("Annotations")).unwrap();
        std::fs::create_dir_all(voc.join("ImageSets/Main")).unwrap();
        std::fs::write(voc.join("ImageSets/Main/train.txt"), "000005\n000007\n").unwrap();
        std::fs::write(
            voc.join("Annotations/000005.xml"),
            xml(
                "000005.jpg",
                &[
                    ("chair", false, [1, 1, 10, 10]),
                    ("chair", true, [21, 11, 40, 30]),
                ],
            ),
        )
        .unwrap();
        std::fs::write(
            voc.join("Annotations/000007.xml"),
            xml("000007.jpg", &[("car", false, [1, 1, 100, 80])]),
        )
        .unwrap();
        let dataset = load_voc_xml(voc, "train").unwrap();
        let difficult = difficult_from_voc_xml(voc, "train", &dataset).unwrap();
        let chair = voc_annotations::VOC_CLASSES
            .iter()
            .position(|c| *c == "chair")
            .unwrap() as u32
            + 1;
        // XML is 1-based: xmin 21 -> x 20; ymin 11 -> y 10.
        assert_eq!(
            difficult,
            [
                vec![Object {
                    bbox: [10.0, 20.0, 29.0, 39.0],
                    category_id: chair
                }],
                vec![]
            ]
        );
        // A list that is not the dataset's.
        std::fs::write(voc.join("ImageSets/Main/val.txt"), "000007\n000005\n").unwrap();
        let err = difficult_from_voc_xml(voc, "val", &dataset)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("000007.xml") && err.contains("image id 5"),
            "{err}"
        );
        std::fs::write(voc.join("ImageSets/Main/val.txt"), "000005\n").unwrap();
        let err = difficult_from_voc_xml(voc, "val", &dataset)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("val.txt: lists 1 images, but the dataset has 2"),
            "{err}"
        );
    }
}
