//! The lesson's `get_lrg`: for each image, the object with the largest box.
//!
//! The lesson sorts each image's boxes by `np.product(bb[-2:] - bb[:2])`,
//! i.e. `(bottom - top) * (right - left)` on inclusive coordinates, with
//! `reverse=True` and takes the first; Python's sort is stable, so among equal
//! areas the first in annotation order wins. Images without a usable box
//! (the lesson would crash on them) are named in a warning and left out.
//!
//! A dataset where *no* image has a usable box is an error: the loaders of
//! `voc-annotations` already refuse such a source naming its file and why
//! ([`voc_annotations::AnnotationError::NoUsableBox`]); [`largest_objects`]
//! refuses one built otherwise too, rather than writing empty CSVs that a
//! later stage would only find empty.

use std::collections::HashMap;
use std::path::Path;

use csv_export::{BbRow, CsvError, LrgBbRow, LrgRow};
use voc_annotations::{BBox, Dataset, Object};

/// One image's largest object.
#[derive(Debug, Clone, PartialEq)]
pub struct LargestObject {
    pub file_name: String,
    pub category: String,
    /// `[top, left, bottom, right]`, inclusive.
    pub bbox: BBox,
}

/// The largest object of every image that has one, in image order.
#[derive(Debug, Clone, PartialEq)]
pub struct Largest {
    pub rows: Vec<LargestObject>,
    /// Images left out because none of their boxes is usable.
    pub images_without_box: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum LargestError {
    #[error("image {file_name}: object has category id {category_id}, which the dataset does not define")]
    UnknownCategory { file_name: String, category_id: u32 },
    #[error("none of the {images} images has a usable box: no rows for lrg.csv and bb.csv")]
    NoUsableBox { images: usize },
}

/// The lesson's area: `(bottom - top) * (right - left)`, in `f64` so that
/// products of large coordinates compare exactly.
pub fn area(bbox: &BBox) -> f64 {
    let [top, left, bottom, right] = bbox.map(f64::from);
    (bottom - top) * (right - left)
}

/// The object with the largest [`area`]; the first one among equals.
pub fn largest(objects: &[Object]) -> Option<&Object> {
    let mut best: Option<(&Object, f64)> = None;
    for o in objects {
        let a = area(&o.bbox);
        if best.is_none_or(|(_, best_area)| a > best_area) {
            best = Some((o, a));
        }
    }
    best.map(|(o, _)| o)
}

/// Every image's largest object, in image order.
pub fn largest_objects(dataset: &Dataset) -> Result<Largest, LargestError> {
    let names: HashMap<u32, &str> = dataset
        .categories
        .iter()
        .map(|c| (c.id, c.name.as_str()))
        .collect();
    let mut rows = Vec::with_capacity(dataset.images.len());
    let mut images_without_box = 0;
    for image in &dataset.images {
        let Some(object) = largest(&image.objects) else {
            images_without_box += 1;
            tracing::warn!(
                "image {} (id {}) has no usable box; left out",
                image.file_name,
                image.id
            );
            continue;
        };
        let category =
            names
                .get(&object.category_id)
                .ok_or_else(|| LargestError::UnknownCategory {
                    file_name: image.file_name.clone(),
                    category_id: object.category_id,
                })?;
        rows.push(LargestObject {
            file_name: image.file_name.clone(),
            category: (*category).to_owned(),
            bbox: object.bbox,
        });
    }
    if rows.is_empty() {
        return Err(LargestError::NoUsableBox {
            images: dataset.images.len(),
        });
    }
    if images_without_box > 0 {
        tracing::warn!(
            "{images_without_box} of {} images have no usable box",
            dataset.images.len()
        );
    }
    Ok(Largest {
        rows,
        images_without_box,
    })
}

impl Largest {
    /// Rows of `lrg.csv` (`fn,cat`).
    pub fn lrg_rows(&self) -> Vec<LrgRow> {
        self.rows
            .iter()
            .map(|r| LrgRow {
                file_name: r.file_name.clone(),
                category: r.category.clone(),
            })
            .collect()
    }

    /// Rows of `bb.csv` (`fn,bbox`).
    pub fn bb_rows(&self) -> Vec<BbRow> {
        self.rows
            .iter()
            .map(|r| BbRow {
                file_name: r.file_name.clone(),
                bbox: r.bbox,
            })
            .collect()
    }

    /// Rows of `lrg_bb.csv` (`fn,cat,bbox`), the combined model's.
    pub fn lrg_bb_rows(&self) -> Vec<LrgBbRow> {
        self.rows
            .iter()
            .map(|r| LrgBbRow {
                file_name: r.file_name.clone(),
                category: r.category.clone(),
                bbox: r.bbox,
            })
            .collect()
    }

    /// Writes `lrg.csv` and `bb.csv`, each atomically.
    pub fn write_csvs(&self, lrg_csv: &Path, bb_csv: &Path) -> Result<(), CsvError> {
        csv_export::write_rows(
            lrg_csv,
            csv_export::LRG_HEADER,
            self.rows
                .iter()
                .map(|r| [r.file_name.as_str(), r.category.as_str()]),
        )?;
        csv_export::write_bb(bb_csv, &self.bb_rows())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voc_annotations::{Category, ImageInfo, LoadStats};

    fn object(bbox: BBox, category_id: u32) -> Object {
        Object { bbox, category_id }
    }

    #[test]
    fn area_is_the_lessons_formula() {
        // np.product([269, 350] - [96, 155]) = 173 * 195
        assert_eq!(area(&[96.0, 155.0, 269.0, 350.0]), 173.0 * 195.0);
        assert_eq!(area(&[5.0, 5.0, 5.0, 100.0]), 0.0);
    }

    #[test]
    fn largest_picks_max_area_and_first_among_ties() {
        let tall = object([0.0, 0.0, 10.0, 2.0], 1); // 20
        let wide = object([0.0, 0.0, 2.0, 10.0], 2); // 20
        let small = object([0.0, 0.0, 3.0, 3.0], 3); // 9
        let big = object([1.0, 1.0, 8.0, 8.0], 4); // 49
        assert_eq!(largest(&[tall, wide, small]), Some(&tall));
        assert_eq!(largest(&[wide, tall, small]), Some(&wide));
        assert_eq!(largest(&[small, tall, big, wide]), Some(&big));
        assert_eq!(largest(&[]), None);
        // Large coordinates whose f32 products would round to a tie.
        let a = object([0.0, 0.0, 4097.0, 4097.0], 1);
        let b = object([0.0, 0.0, 4096.0, 4098.0], 2);
        assert_eq!(largest(&[b, a]), Some(&a));
    }

    fn dataset(images: Vec<(&str, Vec<Object>)>) -> Dataset {
        Dataset {
            images: images
                .into_iter()
                .zip(1..)
                .map(|((name, objects), id)| ImageInfo {
                    id,
                    file_name: name.into(),
                    width: 100,
                    height: 100,
                    objects,
                })
                .collect(),
            categories: vec![
                Category {
                    id: 1,
                    name: "cat".into(),
                },
                Category {
                    id: 2,
                    name: "dog".into(),
                },
            ],
            stats: LoadStats::default(),
        }
    }

    #[test]
    fn images_without_a_box_are_left_out_and_counted() {
        let ds = dataset(vec![
            (
                "a.jpg",
                vec![
                    object([0.0, 0.0, 5.0, 5.0], 1),
                    object([0.0, 0.0, 9.0, 9.0], 2),
                ],
            ),
            ("b.jpg", vec![]),
            ("c.jpg", vec![object([1.0, 2.0, 3.0, 4.0], 1)]),
        ]);
        let largest = largest_objects(&ds).unwrap();
        assert_eq!(largest.images_without_box, 1);
        assert_eq!(
            largest.rows,
            vec![
                LargestObject {
                    file_name: "a.jpg".into(),
                    category: "dog".into(),
                    bbox: [0.0, 0.0, 9.0, 9.0]
                },
                LargestObject {
                    file_name: "c.jpg".into(),
                    category: "cat".into(),
                    bbox: [1.0, 2.0, 3.0, 4.0]
                },
            ]
        );
    }

    #[test]
    fn a_dataset_without_any_usable_box_is_an_error() {
        for ds in [
            dataset(vec![("a.jpg", vec![]), ("b.jpg", vec![])]),
            dataset(vec![]),
        ] {
            let err = largest_objects(&ds).unwrap_err().to_string();
            assert!(err.contains("has a usable box"), "{err}");
        }
    }

    #[test]
    fn an_undefined_category_is_an_error() {
        let ds = dataset(vec![("a.jpg", vec![object([0.0, 0.0, 5.0, 5.0], 7)])]);
        let err = largest_objects(&ds).unwrap_err().to_string();
        assert!(err.contains("a.jpg") && err.contains('7'), "{err}");
    }
}
