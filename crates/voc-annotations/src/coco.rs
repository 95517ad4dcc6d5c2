//! The lesson's COCO-style JSON (`pascal_train2007.json`).
//!
//! Deserialised straight into borrowed, typed structs: a COCO-sized file
//! (about 900k annotations) must load in a fraction of a second, so no
//! `serde_json::Value` tree and no owned strings until the final model.

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

use crate::{
    accept_box, check_file_name, check_image_size, check_some_box, summarise_clamps,
    AnnotationError, Category, Dataset, ImageInfo, LoadStats, Object,
};

#[derive(Deserialize)]
struct CocoFile<'a> {
    #[serde(borrow)]
    images: Vec<CocoImage<'a>>,
    annotations: Vec<CocoAnnotation>,
    #[serde(borrow)]
    categories: Vec<CocoCategory<'a>>,
}

#[derive(Deserialize)]
struct CocoImage<'a> {
    id: u64,
    #[serde(borrow)]
    file_name: Cow<'a, str>,
    width: u32,
    height: u32,
}

#[derive(Deserialize)]
struct CocoAnnotation {
    /// Only used to name the annotation in errors.
    #[serde(default)]
    id: Option<u64>,
    image_id: u64,
    category_id: u32,
    bbox: [f32; 4],
    #[serde(default, deserialize_with = "flag")]
    ignore: bool,
}

#[derive(Deserialize)]
struct CocoCategory<'a> {
    id: u32,
    #[serde(borrow)]
    name: Cow<'a, str>,
}

/// `ignore` is `0`/`1` in the lesson's file; accept `true`/`false` as well.
fn flag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    struct FlagVisitor;
    impl serde::de::Visitor<'_> for FlagVisitor {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("0, 1, true or false")
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<bool, E> {
            Ok(v)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(serde::de::Unexpected::Unsigned(v), &self)),
            }
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<bool, E> {
            match v {
                0 => Ok(false),
                1 => Ok(true),
                _ => Err(E::invalid_value(serde::de::Unexpected::Signed(v), &self)),
            }
        }
    }
    d.deserialize_any(FlagVisitor)
}

/// Loads the lesson's COCO-style JSON file.
pub fn load_coco_json(path: &Path) -> Result<Dataset, AnnotationError> {
    let bytes = std::fs::read(path).map_err(|source| AnnotationError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse_coco_json(&bytes, path)
}

/// Parses COCO-style JSON already in memory; `path` names it in errors.
pub fn parse_coco_json(bytes: &[u8], path: &Path) -> Result<Dataset, AnnotationError> {
    let file: CocoFile = serde_json::from_slice(bytes).map_err(|e| AnnotationError::Json {
        path: path.to_owned(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;

    let invalid = |what: String, message: String| AnnotationError::Invalid {
        path: path.to_owned(),
        what,
        message,
    };

    let mut categories = Vec::with_capacity(file.categories.len());
    let mut category_ids: HashMap<u32, ()> = HashMap::with_capacity(file.categories.len());
    for c in file.categories {
        if category_ids.insert(c.id, ()).is_some() {
            return Err(invalid(
                format!("category {} ({})", c.id, c.name),
                "duplicate category id".into(),
            ));
        }
        categories.push(Category {
            id: c.id,
            name: c.name.into_owned(),
        });
    }

    let mut images = Vec::with_capacity(file.images.len());
    let mut image_index: HashMap<u64, usize> = HashMap::with_capacity(file.images.len());
    for (index, im) in file.images.into_iter().enumerate() {
        check_file_name(&im.file_name, path, || {
            format!("images[{index}] (id {})", im.id)
        })?;
        if let Some(first) = image_index.insert(im.id, images.len()) {
            let first: &ImageInfo = &images[first];
            return Err(invalid(
                format!("image {} ({})", im.id, im.file_name),
                format!("duplicate image id (also {})", first.file_name),
            ));
        }
        let image = ImageInfo {
            id: im.id,
            file_name: im.file_name.into_owned(),
            width: im.width,
            height: im.height,
            objects: Vec::new(),
        };
        check_image_size(&image, path)?;
        images.push(image);
    }

    // Ids are looked up once per annotation (900k times in a COCO-sized file):
    // a dense table where ids are dense, as in VOC and COCO, else the map.
    let image_at = IdTable::new(image_index);
    let category_known = IdTable::new(category_ids.keys().map(|&id| (u64::from(id), 0)).collect());
    let mut located = Vec::with_capacity(file.annotations.len());
    let mut per_image = vec![0u32; images.len()];
    for (index, a) in file.annotations.iter().enumerate() {
        let what = || annotation_name(a, index);
        let Some(at) = image_at.get(a.image_id) else {
            return Err(AnnotationError::UnknownImage {
                path: path.to_owned(),
                what: what(),
                image_id: a.image_id,
            });
        };
        if category_known.get(u64::from(a.category_id)).is_none() {
            return Err(AnnotationError::UnknownCategory {
                path: path.to_owned(),
                what: what(),
                category: format!("id {}", a.category_id),
            });
        }
        per_image[at] += u32::from(!a.ignore);
        located.push(at);
    }
    for (image, &n) in images.iter_mut().zip(&per_image) {
        image.objects.reserve_exact(n as usize);
    }
    let mut stats = LoadStats::default();
    for (index, (a, &at)) in file.annotations.iter().zip(&located).enumerate() {
        let bbox = accept_box(
            a.bbox,
            &images[at],
            path,
            || annotation_name(a, index),
            &mut stats,
        )?;
        if a.ignore {
            stats.ignored += 1;
        } else {
            images[at].objects.push(Object {
                bbox,
                category_id: a.category_id,
            });
        }
    }
    summarise_clamps(&stats, path);
    let dataset = Dataset {
        images,
        categories,
        stats,
    };
    check_some_box(&dataset, path, file.annotations.len(), "`ignore`")?;
    Ok(dataset)
}

fn annotation_name(a: &CocoAnnotation, index: usize) -> String {
    match a.id {
        Some(id) => format!("annotation id {id} (#{index})"),
        None => format!("annotation #{index}"),
    }
}

/// Id to position: a flat table when the ids are dense enough, else a map.
enum IdTable {
    Dense(Vec<u32>),
    Sparse(HashMap<u64, usize>),
}

impl IdTable {
    const ABSENT: u32 = u32::MAX;

    fn new(map: HashMap<u64, usize>) -> Self {
        let max_id = map.keys().copied().max().unwrap_or(0);
        if max_id <= 16 * map.len() as u64 + 1024 && map.len() < Self::ABSENT as usize {
            let mut table = vec![Self::ABSENT; max_id as usize + 1];
            for (id, at) in map {
                table[id as usize] = at as u32;
            }
            IdTable::Dense(table)
        } else {
            IdTable::Sparse(map)
        }
    }

    fn get(&self, id: u64) -> Option<usize> {
        match self {
            IdTable::Dense(table) => match table.get(usize::try_from(id).ok()?) {
                Some(&at) if at != Self::ABSENT => Some(at as usize),
                _ => None,
            },
            IdTable::Sparse(map) => map.get(&id).copied(),
        }
    }
}
