//! The fuzz targets: what each feeds, its tokens and its format-aware mutation.
//!
//! To add a target (as `pipeline_toml` was added):
//!   1. write `fn pipeline_toml(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String>`
//!      below (feed the parser, push `"<reader>: ok"` or `s.refused(...)?` per reader);
//!   2. add a [`Target`] to [`TARGETS`] at the marked place;
//!   3. add `#[test] fn pipeline_toml() { run("pipeline_toml") }` to `tests/fuzz.rs`;
//!   4. put a few small valid files in `corpus/pipeline_toml/`.
//!
//! `tests/fuzz.rs` checks that every entry of [`TARGETS`] has its test and its corpus.

use std::sync::Arc;

use crate::mutate::Rng;
use crate::{Scratch, Target};

/// Every fuzz target, by test name.
pub const TARGETS: &[Target] = &[
    Target {
        name: "coco_json",
        about: "voc_annotations::load_coco_json on a file and parse_coco_json on the bytes",
        run: coco_json,
        dictionary: JSON_TOKENS,
        structured: None,
        max_len: 64 << 10,
    },
    Target {
        name: "voc_xml",
        about: "voc_annotations::load_voc_xml on a VOC layout (split list + annotation XMLs) and parse_voc_xml on each XML",
        run: voc_xml,
        dictionary: XML_TOKENS,
        structured: None,
        max_len: 64 << 10,
    },
    Target {
        name: "csv",
        about: "csv_export::{read_lrg, read_bb, read_lrg_bb, read_jsonl, parse_bbox, check_file_name} and viz::artifacts' readers (bbox/class/combined predictions, lr_find CSV+JSON, metrics, any table)",
        run: csv,
        dictionary: CSV_TOKENS,
        structured: None,
        max_len: 32 << 10,
    },
    Target {
        name: "model_meta",
        about: "the tch-free part of trainer::checkpoint::load and stage::model_meta: safetensors header, tensor views, the `trainer` metadata JSON",
        run: model_meta,
        dictionary: SAFETENSORS_TOKENS,
        structured: Some(mutate_safetensors),
        max_len: 64 << 10,
    },
    Target {
        name: "jpeg",
        about: "augment's decode path: JpegDecoder by the reduced inverse DCT (1/2, 1/4, 1/8, covering), the image crate, read_image_size, decode_squashed, the Loader with EXIF orientation; viz's read_image(_as_viewed)",
        run: jpeg,
        dictionary: JPEG_TOKENS,
        structured: Some(mutate_jpeg),
        max_len: 256 << 10,
    },
    Target {
        name: "pipeline_toml",
        about: "pipeline::Pipeline::load on a pipeline file (syntax, kinds, placeholders, DAG, typed params with line numbers) and check_sources_exist",
        run: pipeline_toml,
        dictionary: TOML_TOKENS,
        structured: None,
        max_len: 32 << 10,
    },
    // ---- more targets here --------------------------------------------------------
];

pub fn find_target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

// ---------------------------------------------------------------------------------
// Annotations

const JSON_TOKENS: &[&[u8]] = &[
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\"",
    b"null",
    b"true",
    b"false",
    b"\"images\":",
    b"\"annotations\":",
    b"\"categories\":",
    b"\"bbox\":",
    b"\"ignore\":",
    b"\"image_id\":",
    b"\"category_id\":",
    b"\"file_name\":",
    b"\"width\":",
    b"\"height\":",
    b"\"id\":",
    b"\"name\":",
    b"\"../x.jpg\"",
    b"\"/etc/passwd\"",
    b"\"a//b.jpg\"",
    b"\"\"",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"1e999",
    b"-0",
    b"0.5",
    b"[0,0,0.5,0.5]",
    b"{\"id\":1,\"file_name\":\"a.jpg\",\"width\":10,\"height\":10}",
    b"{\"image_id\":1,\"category_id\":1,\"bbox\":[1,1,2,2]}",
];

const XML_TOKENS: &[&[u8]] = &[
    b"<annotation>",
    b"</annotation>",
    b"<object>",
    b"</object>",
    b"<bndbox>",
    b"</bndbox>",
    b"<xmin>",
    b"</xmin>",
    b"<ymax>",
    b"</ymax>",
    b"<size>",
    b"</size>",
    b"<width>",
    b"</width>",
    b"<height>",
    b"</height>",
    b"<name>",
    b"</name>",
    b"<filename>",
    b"</filename>",
    b"<difficult>1</difficult>",
    b"<filename>../x.jpg</filename>",
    b"<name>dog</name>",
    b"<name>unicorn</name>",
    b"<![CDATA[",
    b"]]>",
    b"&amp;",
    b"&#0;",
    b"&#x110000;",
    b"&#99999999999;",
    b"&unknown;",
    b"<?xml version=\"1.0\"?>",
    b"<!DOCTYPE a [<!ENTITY x \"y\">]>",
    b"<!-- c -->",
    b"<a/>",
    b"<x:y xmlns:x=\"u\">",
    b" attr=\"v\"",
    b"\xff\xfe",
    // The voc_xml target's separator between the split list and the XMLs.
    VOC_SEPARATOR,
    b"2008_000001\n",
    b"+7\n",
];

fn coco_json(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String> {
    let path = s.write("pascal_train2007.json", input)?;
    let loaded = voc_annotations::load_coco_json(&path);
    let parsed = voc_annotations::parse_coco_json(input, &path);
    match (&loaded, &parsed) {
        (Ok(a), Ok(b)) if a == b => {}
        (Err(a), Err(b)) if a.to_string() == b.to_string() => {}
        _ => return Err("load_coco_json and parse_coco_json disagree on the same bytes".into()),
    }
    Ok(vec![match loaded {
        Ok(dataset) => {
            check_dataset(&dataset)?;
            "coco: ok".into()
        }
        Err(e) => s.refused("load_coco_json", &e, &path.to_string_lossy())?,
    }])
}

/// Separates the split list from the annotation files in a `voc_xml` input.
const VOC_SEPARATOR: &[u8] = b"\n=====\n";

/// A `voc_xml` input is `<split list>` `=====` `<xml>` `=====` `<xml>`...: the i-th
/// XML is written as `Annotations/<i-th stem of the list>.xml`. An input without
/// a separator is one XML, listed as `000001`.
fn voc_xml(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String> {
    let parts = split(input, VOC_SEPARATOR);
    let (list, xmls): (&[u8], &[&[u8]]) = if parts.len() == 1 {
        (b"000001\n", &parts[..])
    } else {
        (parts[0], &parts[1..])
    };
    let voc = s.dir().join("VOC2007");
    let _ = std::fs::remove_dir_all(&voc);
    s.write("VOC2007/ImageSets/Main/train.txt", list)?;
    std::fs::create_dir_all(voc.join("Annotations")).map_err(|e| e.to_string())?;
    // Stems as the loader reads them; only plain ones become files (the harness
    // must not write outside its folder), the others stay missing.
    let stems: Vec<String> = String::from_utf8_lossy(list)
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    let mut tags = Vec::new();
    for (i, xml) in xmls.iter().enumerate() {
        let stem = stems.get(i).cloned().unwrap_or_else(|| format!("extra{i}"));
        let plain = !stem.is_empty()
            && stem.len() <= 40
            && stem
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'+' || b == b'-');
        let name = if plain { stem } else { format!("unlisted{i}") };
        let path = s.write(&format!("VOC2007/Annotations/{name}.xml"), xml)?;
        tags.push(match voc_annotations::parse_voc_xml(xml, &path) {
            Ok(parsed) => {
                for o in &parsed.objects {
                    if o.line == 0 {
                        return Err(format!("parse_voc_xml: object {:?} on line 0", o.name));
                    }
                }
                "parse_voc_xml: ok".into()
            }
            Err(e) => s.refused("parse_voc_xml", &e, &path.to_string_lossy())?,
        });
    }
    tags.push(match voc_annotations::load_voc_xml(&voc, "train") {
        Ok(dataset) => {
            check_dataset(&dataset)?;
            "load_voc_xml: ok".into()
        }
        // It names the list, an annotation file or the folder: all under `voc`.
        Err(e) => s.refused("load_voc_xml", &e, &voc.to_string_lossy())?,
    });
    Ok(tags)
}

/// What `voc_annotations` promises about a loaded dataset (its module docs):
/// images of non-zero size with safe file names, known categories, boxes
/// `[top, left, bottom, right]` clamped to the image, at least one box.
fn check_dataset(d: &voc_annotations::Dataset) -> Result<(), String> {
    if d.object_count() == 0 {
        return Err("a dataset without a usable box was accepted".into());
    }
    for image in &d.images {
        if image.width == 0 || image.height == 0 {
            return Err(format!(
                "image {} of size {}x{} accepted",
                image.id, image.width, image.height
            ));
        }
        if let Err(e) = csv_export::check_file_name(&image.file_name) {
            return Err(format!(
                "image {}: unsafe file name accepted: {e}",
                image.id
            ));
        }
        for o in &image.objects {
            if d.category_name(o.category_id).is_none() {
                return Err(format!(
                    "image {}: unknown category {} accepted",
                    image.id, o.category_id
                ));
            }
            let [top, left, bottom, right] = o.bbox;
            let (max_y, max_x) = (image.height as f32 - 1.0, image.width as f32 - 1.0);
            let ok = o.bbox.iter().all(|v| v.is_finite())
                && top <= bottom
                && left <= right
                && top >= 0.0
                && left >= 0.0
                && bottom <= max_y
                && right <= max_x;
            if !ok {
                return Err(format!(
                    "image {} ({}x{}): box {:?} accepted, which is not [top, left, bottom, right] inside the image \
                     (bb.csv would get a box that csv_export::read_bb refuses, or a box outside its image)",
                    image.id, image.width, image.height, o.bbox
                ));
            }
        }
    }
    Ok(())
}

fn split<'a>(data: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(separator.len()).position(|w| w == separator) {
        parts.push(&rest[..at]);
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest);
    parts
}

// ---------------------------------------------------------------------------------
// CSV artifacts

const CSV_TOKENS: &[&[u8]] = &[
    b",",
    b"\"",
    b"\"\"",
    b"\n",
    b"\r\n",
    b"\r",
    b" ",
    b"\0",
    b"\xef\xbb\xbf",
    b"\xff",
    b"fn,cat\n",
    b"fn,bbox\n",
    b"fn,bbox,true_bbox,iou\n",
    b"fn,cat,true_cat,prob\n",
    b"iteration,lr,loss,smooth_loss\n",
    b"epoch,trn_loss,val_loss,seconds\n",
    b"epoch,trn_loss,val_loss,l1_px,mean_iou,iou50,seconds\n",
    b"000012.jpg",
    b"../x.jpg",
    b"/etc/passwd",
    b"a/./b.jpg",
    b"1 2 3 4",
    b"4 3 2 1",
    b"NaN",
    b"inf",
    b"-inf",
    b"1e39",
    b"{\"file\":\"a.jpg\"}",
    b"\"bbox\":[1,2,3,4]",
    b"\"classes\":[{\"class\":\"dog\",\"prob\":1e39}]",
    b"{\"suggested_lr\":1e-3,\"min_loss_lr\":1e-2}",
    b"null",
];

fn csv(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String> {
    let path = s.write("artifact.csv", input)?;
    let named = path.to_string_lossy().into_owned();
    let mut tags = Vec::new();
    // csv-export: the lesson's two CSVs and the predict JSON lines.
    tags.push(match csv_export::read_lrg(&path) {
        Ok(rows) => {
            for r in &rows {
                csv_export::check_file_name(&r.file_name)
                    .map_err(|e| format!("read_lrg accepted {e}"))?;
                if r.category.is_empty() {
                    return Err("read_lrg accepted an empty category".into());
                }
            }
            round_trip_lrg(s, &rows)?;
            "read_lrg: ok".into()
        }
        Err(e) => s.refused("read_lrg", &e, &named)?,
    });
    tags.push(match csv_export::read_bb(&path) {
        Ok(rows) => {
            for r in &rows {
                csv_export::check_file_name(&r.file_name)
                    .map_err(|e| format!("read_bb accepted {e}"))?;
                let back = csv_export::parse_bbox(&csv_export::format_bbox(&r.bbox));
                if back.as_ref() != Ok(&r.bbox) {
                    return Err(format!(
                        "read_bb: box {:?} does not survive format_bbox/parse_bbox: {back:?}",
                        r.bbox
                    ));
                }
            }
            "read_bb: ok".into()
        }
        Err(e) => s.refused("read_bb", &e, &named)?,
    });
    tags.push(match csv_export::read_lrg_bb(&path) {
        Ok(rows) => {
            for r in &rows {
                csv_export::check_file_name(&r.file_name)
                    .map_err(|e| format!("read_lrg_bb accepted {e}"))?;
                if r.category.is_empty() {
                    return Err("read_lrg_bb accepted an empty category".into());
                }
                let back = csv_export::parse_bbox(&csv_export::format_bbox(&r.bbox));
                if back.as_ref() != Ok(&r.bbox) {
                    return Err(format!(
                        "read_lrg_bb: box {:?} does not survive format_bbox/parse_bbox: {back:?}",
                        r.bbox
                    ));
                }
            }
            "read_lrg_bb: ok".into()
        }
        Err(e) => s.refused("read_lrg_bb", &e, &named)?,
    });
    tags.push(match csv_export::read_jsonl(&path) {
        Ok(predictions) => {
            let finite = predictions.iter().all(|p| {
                p.classes.iter().all(|c| c.prob.is_finite()) && p.bbox.is_none_or(|b| b.iter().all(|v| v.is_finite()))
            });
            if finite {
                "read_jsonl: ok".into()
            } else {
                "note: read_jsonl accepts a non-finite prob or box (a JSON number beyond f32, e.g. 1e39)".into()
            }
        }
        Err(e) => s.refused("read_jsonl", &e, &named)?,
    });
    // viz: the training stages' artifacts.
    use viz::artifacts as a;
    tags.push(match a::read_bbox_predictions(&path) {
        Ok(rows) => {
            for r in &rows {
                csv_export::check_file_name(&r.file_name)
                    .map_err(|e| format!("read_bbox_predictions accepted {e}"))?;
                if !r.bbox.iter().chain(&r.true_bbox).all(|v| v.is_finite()) {
                    return Err("read_bbox_predictions accepted a non-finite box".into());
                }
            }
            "read_bbox_predictions: ok".into()
        }
        Err(e) => s.refused("read_bbox_predictions", &e, &named)?,
    });
    tags.push(match a::read_combined_predictions(&path) {
        Ok(rows) => {
            for r in &rows {
                csv_export::check_file_name(&r.file_name)
                    .map_err(|e| format!("read_combined_predictions accepted {e}"))?;
            }
            "read_combined_predictions: ok".into()
        }
        Err(e) => s.refused("read_combined_predictions", &e, &named)?,
    });
    tags.push(match a::read_class_predictions(&path) {
        Ok(rows) => {
            for r in &rows {
                csv_export::check_file_name(&r.file_name)
                    .map_err(|e| format!("read_class_predictions accepted {e}"))?;
            }
            "read_class_predictions: ok".into()
        }
        Err(e) => s.refused("read_class_predictions", &e, &named)?,
    });
    tags.push(match a::read_lr_find(&path) {
        Ok(points) => {
            if points.iter().any(|p| p.lr.is_nan() || p.lr <= 0.0) {
                return Err("read_lr_find accepted a learning rate that is not positive".into());
            }
            "read_lr_find: ok".into()
        }
        Err(e) => s.refused("read_lr_find", &e, &named)?,
    });
    tags.push(match a::read_lr_suggestion(&path) {
        Ok(_) => "read_lr_suggestion: ok".into(),
        Err(e) => s.refused("read_lr_suggestion", &e, &named)?,
    });
    tags.push(match a::read_metrics(&path) {
        Ok(table) => {
            if table.rows.iter().any(|r| r.len() != table.columns.len()) {
                return Err("read_metrics: a row with another length than the header".into());
            }
            for c in ["epoch", "trn_loss", "val_loss"] {
                if table.column(c).is_none() {
                    return Err(format!("read_metrics accepted a table without {c}"));
                }
            }
            let _ = table.metric_columns();
            "read_metrics: ok".into()
        }
        Err(e) => s.refused("read_metrics", &e, &named)?,
    });
    tags.push(match a::read_string_table(&path) {
        Ok(_) => "read_string_table: ok".into(),
        Err(e) => s.refused("read_string_table", &e, &named)?,
    });
    tags.push(match a::read_header(&path) {
        Ok(_) => "read_header: ok".into(),
        Err(e) => s.refused("read_header", &e, &named)?,
    });
    // The in-memory field parsers, on every field-like piece of the input.
    let text = String::from_utf8_lossy(input);
    for field in text.split(['\n', ',']).take(64) {
        match csv_export::parse_bbox(field) {
            Ok(b) => {
                let [top, left, bottom, right] = b;
                if !(b.iter().all(|v| v.is_finite()) && top <= bottom && left <= right) {
                    return Err(format!("csv_export::parse_bbox({field:?}) accepted {b:?}"));
                }
            }
            Err(e) => {
                if e.is_empty() {
                    return Err(format!("csv_export::parse_bbox({field:?}): empty error"));
                }
            }
        }
        if let Some(b) = a::parse_bbox(field) {
            if !b.iter().all(|v| v.is_finite()) {
                return Err(format!(
                    "viz::artifacts::parse_bbox({field:?}) accepted {b:?}"
                ));
            }
        }
        if let Err(e) = csv_export::check_file_name(field) {
            s.refused_anonymous("check_file_name", &e)?;
        }
    }
    Ok(tags)
}

/// Rows `read_lrg` accepted, written as the project writes them, must read back the same.
fn round_trip_lrg(s: &Scratch, rows: &[csv_export::LrgRow]) -> Result<(), String> {
    let mut out = Vec::new();
    csv_export::write_record(&mut out, &csv_export::LRG_HEADER).map_err(|e| e.to_string())?;
    for r in rows {
        csv_export::write_record(&mut out, &[&r.file_name, &r.category])
            .map_err(|e| e.to_string())?;
    }
    let path = s.write("round_trip.csv", &out)?;
    match csv_export::read_lrg(&path) {
        Ok(back) if back == rows => Ok(()),
        Ok(back) => Err(format!(
            "lrg rows {rows:?} written and read back as {back:?}"
        )),
        Err(e) => Err(format!(
            "lrg rows {rows:?} written by write_record are refused by read_lrg: {e}"
        )),
    }
}

// ---------------------------------------------------------------------------------
// Model files

const SAFETENSORS_TOKENS: &[&[u8]] = &[
    b"\"__metadata__\":",
    b"\"trainer\":",
    b"\"dtype\":\"F32\"",
    b"\"dtype\":\"BOOL\"",
    b"\"dtype\":\"F8_E4M3\"",
    b"\"dtype\":\"I64\"",
    b"\"shape\":[]",
    b"\"shape\":[18446744073709551615,0]",
    b"\"shape\":[4294967296,4294967296]",
    b"\"data_offsets\":[0,18446744073709551615]",
    b"\"data_offsets\":[8,4]",
    b"{\\\"arch\\\":\\\"tiny\\\",\\\"task\\\":1}",
    b"\\\"format\\\":18446744073709551615",
    b"\\\"format\\\":-1",
    b"\\\"",
    b"{",
    b"}",
    b",",
    b"\"",
];

/// The metadata key of trainer::checkpoint (`METADATA_KEY`).
const METADATA_KEY: &str = "trainer";
/// trainer::stage::MODEL_FORMAT.
const MODEL_FORMAT: u64 = 1;

/// What the trainer does with a model file before libtorch sees it
/// (`checkpoint::load`, `stage::model_meta`), re-stated without tch (the trainer
/// crate links libtorch; see the README for the refactor that would let this
/// target call the trainer's own code).
fn model_meta(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String> {
    use safetensors::tensor::{Dtype, SafeTensors};
    let mut tags = Vec::new();
    let metadata = match SafeTensors::read_metadata(input) {
        Ok((_, header)) => match header.metadata().as_ref().and_then(|m| m.get(METADATA_KEY)) {
            Some(json) => match serde_json::from_str::<serde_json::Value>(json) {
                Ok(v) => Some(v),
                Err(e) => {
                    tags.push(s.refused_anonymous("metadata json", &e)?);
                    None
                }
            },
            None => {
                tags.push("read_metadata: no trainer metadata".into());
                Some(serde_json::Value::Null)
            }
        },
        Err(e) => {
            tags.push(s.refused_anonymous("read_metadata", &e)?);
            None
        }
    };
    if let Some(json) = metadata {
        // stage::model_meta's checks before it deserialises ModelMeta.
        let is_ours = json
            .as_object()
            .is_some_and(|m| m.contains_key("arch") && m.contains_key("task"));
        let format = json.get("format").and_then(|f| f.as_u64()).unwrap_or(1);
        tags.push(
            match (is_ours, format > MODEL_FORMAT) {
                (false, _) => "model_meta: not ours",
                (true, true) => "model_meta: newer layout",
                (true, false) => "model_meta: ok",
            }
            .into(),
        );
    }
    match SafeTensors::deserialize(input) {
        Ok(file) => {
            for (name, view) in file.tensors() {
                let elements = view
                    .shape()
                    .iter()
                    .try_fold(1usize, |n, &d| n.checked_mul(d));
                let bits = match view.dtype() {
                    Dtype::F32 | Dtype::I32 => 32,
                    Dtype::F64 | Dtype::I64 => 64,
                    Dtype::F16 | Dtype::BF16 => 16,
                    Dtype::U8 | Dtype::BOOL => 8,
                    // checkpoint::load refuses other dtypes by name.
                    _ => continue,
                };
                let expected = elements.and_then(|n| n.checked_mul(bits / 8));
                if expected != Some(view.data().len()) {
                    return Err(format!(
                        "safetensors accepted tensor `{name}` of shape {:?} and dtype {:?} with {} data bytes: \
                         checkpoint::load would hand libtorch a buffer of the wrong size",
                        view.shape(),
                        view.dtype(),
                        view.data().len()
                    ));
                }
                if view.shape().iter().any(|&d| i64::try_from(d).is_err()) {
                    tags.push(
                        "note: safetensors accepts a dimension above i64::MAX; checkpoint::load casts it with `as i64`"
                            .into(),
                    );
                }
            }
            tags.push("deserialize: ok".into());
        }
        Err(e) => tags.push(s.refused_anonymous("deserialize", &e)?),
    }
    Ok(tags)
}

/// Changes the header length (the first 8 bytes, little-endian) or a field of the JSON header.
fn mutate_safetensors(data: &mut Vec<u8>, rng: &mut Rng) {
    if data.len() < 8 {
        data.resize(8, 0);
    }
    let n = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
    let len = data.len() as u64;
    let new = match rng.below(8) {
        0 => u64::MAX,
        1 => n.wrapping_add(1),
        2 => n.wrapping_sub(1),
        3 => len,
        4 => len - 8,
        5 => 100_000_001,
        6 => n.wrapping_mul(2),
        _ => rng.next_u64() % (len + 16),
    };
    data[..8].copy_from_slice(&new.to_le_bytes());
}

// ---------------------------------------------------------------------------------
// Images

const JPEG_TOKENS: &[&[u8]] = &[
    b"\xff\xd8\xff",
    b"\xff\xd9",
    b"\xff\xda",
    b"\xff\xc0\x00\x11\x08\xff\xff\xff\xff\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    b"\xff\xc2\x00\x11\x08\x40\x00\x40\x00\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01",
    b"\xff\xe1\x00\x22Exif\x00\x00MM\x00\x2a\x00\x00\x00\x08\x00\x01\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00\x00\x00\x00\x00",
    b"\xff\xe1\x00\x10Exif\x00\x00II\x2a\x00\xff\xff\xff\xff",
    b"\xff\xdd\x00\x04\x00\x00",
    b"\xff\xdd\x00\x04\xff\xff",
    b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x02",
    b"\xff\x00",
    b"\xff\xff",
];

fn jpeg(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String> {
    use augment::{JpegDecoder, JpegScale};
    let mut tags = Vec::new();
    let mut decoder = JpegDecoder::new().map_err(|e| format!("JpegDecoder::new: {e}"))?;
    // Not JpegScale::Full (`decode(.., None)`): only benchmarks and tests call it, and it
    // may allocate up to augment::MAX_IMAGE_PIXELS (750 MB), above the fuzzer's limit.
    for (scale, label) in [
        (JpegScale::Eighths(4), "decode 1/2"),
        (JpegScale::Eighths(2), "decode 1/4"),
        (JpegScale::Eighths(1), "decode 1/8"),
        (JpegScale::Covering { side: 224 }, "decode covering 224"),
        (JpegScale::Covering { side: 24 }, "decode covering 24"),
    ] {
        s.step(label);
        let outcome = match decoder.decode_at(input, scale) {
            Ok((dims, rgb)) => {
                let want = dims.width as usize * dims.height as usize * 3;
                if rgb.len() != want || dims.width == 0 || dims.height == 0 {
                    return Err(format!(
                        "JpegDecoder::decode_at({label}): {dims:?} with {} bytes of RGB",
                        rgb.len()
                    ));
                }
                if let JpegScale::Eighths(n) = scale {
                    let scaled = |d: u32| (d * u32::from(n)).div_ceil(8);
                    if (dims.width, dims.height)
                        != (scaled(dims.orig_width), scaled(dims.orig_height))
                    {
                        // jpeg-decoder's `scale` picks the smallest IDCT size where EITHER
                        // side reaches the request, so a side of a few pixels comes out smaller.
                        tags.push(
                            "note: JpegDecoder::decode_at(Eighths(n)) decoded another size than n/8 of each side"
                                .into(),
                        );
                    }
                }
                format!("{label}: ok")
            }
            Err(e) => s.refused_anonymous(label, &e)?,
        };
        tags.push(outcome);
    }
    s.step("decode_with_image_crate");
    let with_image = augment::decode_with_image_crate(input);
    tags.push(match &with_image {
        Ok(_) => "decode_with_image_crate: ok".into(),
        Err(e) => s.refused_anonymous("decode_with_image_crate", e)?,
    });

    let path = s.write("image.jpg", input)?;
    let named = path.to_string_lossy().into_owned();
    // viz's drawing stages (look, prediction grids, show --draw, predict --draw).
    s.step("viz read_image");
    tags.push(match viz::images::read_image(&path) {
        Ok(_) => "viz read_image: ok".into(),
        Err(e) => s.refused_anonymous("viz read_image", &e)?,
    });
    s.step("viz read_image_as_viewed");
    tags.push(match viz::images::read_image_as_viewed(&path) {
        Ok(_) => "viz read_image_as_viewed: ok".into(),
        Err(e) => s.refused_anonymous("viz read_image_as_viewed", &e)?,
    });
    s.step("read_image_size");
    let size = augment::read_image_size(&path);
    tags.push(match &size {
        Ok(_) => "read_image_size: ok".into(),
        Err(e) => s.refused("read_image_size", e, &named)?,
    });
    s.step("decode_squashed");
    let squashed = match augment::decode_squashed(&path, 32) {
        Ok(sq) => {
            if sq.image.dimensions() != (32, 32) || sq.orig_size.0 == 0 || sq.orig_size.1 == 0 {
                return Err(format!(
                    "decode_squashed: {:?} image of original size {:?}",
                    sq.image.dimensions(),
                    sq.orig_size
                ));
            }
            if let Ok(header_size) = size {
                if header_size != sq.orig_size {
                    tags.push(
                        "note: read_image_size and decode_squashed disagree on the size".into(),
                    );
                }
            }
            "decode_squashed: ok".into()
        }
        Err(e) => s.refused("decode_squashed", &e, &named)?,
    };
    tags.push(squashed);
    // The loader as `cargo xtask predict` runs it: EXIF orientation applied.
    let items = Arc::new(vec![augment::Item {
        path: path.clone(),
        class: Some(0),
        bbox: Some([1.0, 2.0, 10.0, 12.0]),
        ..augment::Item::default()
    }]);
    let config = augment::LoaderConfig {
        size: 24,
        batch_size: 1,
        workers: 1,
        prefetch: 0,
        shuffle: false,
        augment: Some(augment::AugmentParams::default()),
        orientation: augment::Orientation::Exif,
        ..augment::LoaderConfig::default()
    };
    s.step("the loader");
    let loader = augment::Loader::new(items, config);
    for batch in loader.epoch(0) {
        tags.push(match batch {
            Ok(batch) => {
                if batch.n != 1
                    || batch.x.len() != 3 * 24 * 24
                    || !batch.x.iter().all(|v| v.is_finite())
                {
                    return Err(format!(
                        "Loader: a batch of {} images, {} values",
                        batch.n,
                        batch.x.len()
                    ));
                }
                "loader: ok".into()
            }
            Err(e) => s.refused("loader", &e, &named)?,
        });
    }
    Ok(tags)
}

/// JPEG markers whose segment has a length (all but SOI, EOI, RSTn, TEM).
fn has_length(marker: u8) -> bool {
    !matches!(marker, 0x01 | 0xD0..=0xD9 | 0x00 | 0xFF)
}

/// Changes a frame's dimensions or component count, or a segment's length.
fn mutate_jpeg(data: &mut Vec<u8>, rng: &mut Rng) {
    // Segments before the first scan (and the first scan's header).
    let mut segments = Vec::new();
    let mut at = 2;
    while at + 4 <= data.len() && data[at] == 0xFF && segments.len() < 64 {
        let marker = data[at + 1];
        if !has_length(marker) {
            at += 2;
            continue;
        }
        segments.push((at, marker));
        if marker == 0xDA {
            break;
        }
        at += 2 + usize::from(u16::from_be_bytes([data[at + 2], data[at + 3]]));
    }
    if segments.is_empty() {
        return;
    }
    let frames: Vec<usize> = segments
        .iter()
        .filter(|(_, m)| matches!(m, 0xC0..=0xCF) && !matches!(m, 0xC4 | 0xC8 | 0xCC))
        .map(|&(at, _)| at)
        .collect();
    let extreme16 = |rng: &mut Rng, old: u16| -> u16 {
        match rng.below(9) {
            0 => 0,
            1 => 1,
            2 => 0xFFFF,
            3 => 0x4000,
            4 => 0x3FFF,
            5 => old.saturating_mul(2),
            6 => old.saturating_mul(16),
            7 => old / 2,
            _ => rng.next_u64() as u16,
        }
    };
    let put16 = |data: &mut Vec<u8>, at: usize, v: u16| {
        if at + 2 <= data.len() {
            data[at..at + 2].copy_from_slice(&v.to_be_bytes());
        }
    };
    let get16 = |data: &Vec<u8>, at: usize| -> u16 {
        data.get(at..at + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]))
    };
    if !frames.is_empty() && rng.below(3) > 0 {
        let sof = *rng.pick(&frames);
        match rng.below(5) {
            // height, width
            0 | 1 => {
                let field = sof + 5 + 2 * rng.below(2);
                let old = get16(data, field);
                put16(data, field, extreme16(rng, old));
            }
            2 => {
                for field in [sof + 5, sof + 7] {
                    let old = get16(data, field);
                    put16(data, field, extreme16(rng, old));
                }
            }
            // component count
            3 => {
                if let Some(b) = data.get_mut(sof + 9) {
                    *b = *rng.pick(&[0u8, 1, 2, 3, 4, 5, 255]);
                }
            }
            // sampling factors of a component
            _ => {
                let c = sof + 11 + 3 * rng.below(3);
                if let Some(b) = data.get_mut(c) {
                    *b = *rng.pick(&[0x11u8, 0x22, 0x44, 0x41, 0x14, 0x00, 0xFF, 0x12]);
                }
            }
        }
        return;
    }
    let (seg, _) = *rng.pick(&segments);
    let old = get16(data, seg + 2);
    put16(data, seg + 2, extreme16(rng, old));
}

// ---------------------------------------------------------------------------------
// Pipeline files

const TOML_TOKENS: &[&[u8]] = &[
    b"[[stage]]",
    b"[params]",
    b"name = ",
    b"kind = ",
    b"inputs = ",
    b"outputs = ",
    b"params = ",
    b"shared_params = false",
    b"{out}",
    b"{data}",
    b"{cache}",
    b"{images}",
    b"{nope}",
    b"{",
    b"}",
    b"[",
    b"]",
    b"=",
    b"\"",
    b"'",
    b"\n",
    b"schedule",
    b"fit",
    b"lrs",
    b"freeze_to",
    b"lr_find",
    b"train",
    b"predict",
    b"draw",
    b"augment-grid",
    b"exec",
    b"annotations",
    b"task",
    b"bbox",
    b"classify",
    b"-1",
    b"1e308",
    b"nan",
    b"inf",
    b"18446744073709551615",
    b"\"..\"",
    b"/",
];

/// Loads the bytes as `pipelines/p.toml`: a refusal must name the file.
fn pipeline_toml(s: &mut Scratch, input: &[u8]) -> Result<Vec<String>, String> {
    let path = s.write("p.toml", input)?;
    let vars = pipeline::Vars {
        data: s.dir().join("data"),
        out: s.dir().join("out"),
        cache: s.dir().join("cache"),
    };
    s.step("pipeline::Pipeline::load");
    Ok(vec![match pipeline::Pipeline::load(&path, &vars) {
        Ok(loaded) => {
            for stage in &loaded.stages {
                if stage.upstream.iter().any(|&u| u >= loaded.stages.len()) {
                    return Err(format!(
                        "stage {:?} has an upstream index out of range",
                        stage.name
                    ));
                }
            }
            s.step("pipeline::Pipeline::check_sources_exist");
            match loaded.check_sources_exist() {
                Ok(()) => "pipeline: ok".into(),
                Err(e) => s.refused("check_sources_exist", &e, &path.to_string_lossy())?,
            }
        }
        Err(e) => s.refused("Pipeline::load", &e, &path.to_string_lossy())?,
    }])
}
