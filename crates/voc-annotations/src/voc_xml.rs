//! The VOC devkit layout: `<voc_dir>/ImageSets/Main/<split>.txt` lists image
//! stems, `<voc_dir>/Annotations/<stem>.xml` holds each image's annotation.

use std::path::Path;

use quick_xml::events::Event;
use quick_xml::Reader;

use crate::{
    accept_box, check_file_name, check_image_size, check_some_box, line_column, summarise_clamps,
    AnnotationError, Category, Dataset, ImageInfo, LoadStats, Object, VOC_CLASSES,
};

/// One parsed `Annotations/<stem>.xml`, before it is checked against the classes.
#[derive(Debug, Clone, PartialEq)]
pub struct VocAnnotation {
    /// `<filename>`.
    pub file_name: Option<String>,
    pub width: u32,
    pub height: u32,
    pub objects: Vec<VocObject>,
}

/// One `<object>`, coordinates as in the file (1-based, inclusive).
#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    pub name: String,
    pub difficult: bool,
    pub xmin: f32,
    pub ymin: f32,
    pub xmax: f32,
    pub ymax: f32,
    /// Line of `<object>` in the file, to name it in errors.
    pub line: usize,
}

impl VocObject {
    /// The COCO `[x, y, w, h]` of this box, as the lesson's JSON was derived
    /// (Detectron convention: `[xmin-1, ymin-1, xmax-xmin+1, ymax-ymin+1]`).
    pub fn xywh(&self) -> [f32; 4] {
        [
            self.xmin - 1.0,
            self.ymin - 1.0,
            self.xmax - self.xmin + 1.0,
            self.ymax - self.ymin + 1.0,
        ]
    }
}

/// Loads the images listed in `<voc_dir>/ImageSets/Main/<split>.txt`
/// (`voc_dir` is e.g. `VOCdevkit/VOC2007`). Image ids are the file stems as
/// integers (underscores dropped, as Detectron does for `2008_000002`),
/// categories are [`VOC_CLASSES`] with ids 1..20.
pub fn load_voc_xml(voc_dir: &Path, split: &str) -> Result<Dataset, AnnotationError> {
    let annotations_dir = voc_dir.join("Annotations");
    std::fs::read_dir(&annotations_dir).map_err(|source| AnnotationError::Io {
        path: annotations_dir.clone(),
        source,
    })?;
    let list_path = voc_dir
        .join("ImageSets")
        .join("Main")
        .join(format!("{split}.txt"));
    let list = std::fs::read_to_string(&list_path).map_err(|source| AnnotationError::Io {
        path: list_path.clone(),
        source,
    })?;

    let categories: Vec<Category> = VOC_CLASSES
        .iter()
        .zip(1..)
        .map(|(name, id)| Category {
            id,
            name: (*name).to_owned(),
        })
        .collect();
    let mut stats = LoadStats::default();
    let mut images = Vec::new();
    let mut seen_ids = std::collections::HashMap::new();
    let mut boxes = 0;
    for (line_no, line) in list.lines().enumerate() {
        // Class lists (`<class>_train.txt`) add a second column; the stem is the first.
        let Some(stem) = line.split_whitespace().next() else {
            continue;
        };
        let id: u64 = stem
            .replace('_', "")
            .parse()
            .map_err(|_| AnnotationError::Invalid {
                path: list_path.clone(),
                what: format!("line {}", line_no + 1),
                message: format!("image stem {stem:?} is not a number"),
            })?;
        if let Some(first_line) = seen_ids.insert(id, line_no + 1) {
            return Err(AnnotationError::Invalid {
                path: list_path.clone(),
                what: format!("line {}", line_no + 1),
                message: format!("image {stem} listed twice (first on line {first_line})"),
            });
        }
        let xml_path = annotations_dir.join(format!("{stem}.xml"));
        let bytes = std::fs::read(&xml_path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                AnnotationError::MissingListedFile {
                    path: xml_path.clone(),
                    list: list_path.clone(),
                }
            } else {
                AnnotationError::Io {
                    path: xml_path.clone(),
                    source,
                }
            }
        })?;
        let parsed = parse_voc_xml(&bytes, &xml_path)?;
        boxes += parsed.objects.len();
        let mut image = ImageInfo {
            id,
            file_name: parsed.file_name.unwrap_or_else(|| format!("{stem}.jpg")),
            width: parsed.width,
            height: parsed.height,
            objects: Vec::with_capacity(parsed.objects.len()),
        };
        check_image_size(&image, &xml_path)?;
        for (k, o) in parsed.objects.iter().enumerate() {
            let what = || format!("object #{k} (line {})", o.line);
            let Some(class_index) = VOC_CLASSES.iter().position(|c| *c == o.name) else {
                return Err(AnnotationError::UnknownCategory {
                    path: xml_path.clone(),
                    what: what(),
                    category: format!("{:?}", o.name),
                });
            };
            let bbox = accept_box(o.xywh(), &image, &xml_path, what, &mut stats)?;
            if o.difficult {
                stats.ignored += 1;
            } else {
                image.objects.push(Object {
                    bbox,
                    category_id: class_index as u32 + 1,
                });
            }
        }
        images.push(image);
    }
    summarise_clamps(&stats, voc_dir);
    let dataset = Dataset {
        images,
        categories,
        stats,
    };
    check_some_box(&dataset, &list_path, boxes, "<difficult>")?;
    Ok(dataset)
}

/// An `<object>` while its children are read.
#[derive(Default)]
struct PartialObject {
    name: Option<String>,
    difficult: bool,
    coords: [Option<f32>; 4],
    line: usize,
}

/// Parses one VOC annotation XML document; `path` names it in errors.
pub fn parse_voc_xml(bytes: &[u8], path: &Path) -> Result<VocAnnotation, AnnotationError> {
    let xml_error = |pos: usize, message: String| {
        let (line, column) = line_column(bytes, pos);
        AnnotationError::Xml {
            path: path.to_owned(),
            line,
            column,
            message,
        }
    };
    let text =
        std::str::from_utf8(bytes).map_err(|e| xml_error(e.valid_up_to(), "not UTF-8".into()))?;
    let invalid = |pos: usize, what: &str, message: String| AnnotationError::Invalid {
        path: path.to_owned(),
        what: format!("line {}: {what}", line_column(bytes, pos).0),
        message,
    };

    let mut reader = Reader::from_str(text);
    reader.config_mut().expand_empty_elements = true;

    let mut stack: Vec<String> = Vec::new();
    // Byte offset where each open element started, to name its line.
    let mut starts: Vec<usize> = Vec::new();
    let mut content = String::new();
    let mut file_name = None;
    let (mut width, mut height) = (None, None);
    let mut objects = Vec::new();
    let mut object: Option<PartialObject> = None;
    let mut saw_root = false;

    loop {
        let at = reader.buffer_position() as usize;
        let event = reader
            .read_event()
            .map_err(|e| xml_error(reader.error_position() as usize, e.to_string()))?;
        match event {
            Event::Start(e) => {
                let name = String::from_utf8_lossy(e.name().as_ref()).into_owned();
                if stack.is_empty() && name != "annotation" {
                    return Err(invalid(
                        at,
                        &format!("<{name}>"),
                        "root element must be <annotation>".into(),
                    ));
                }
                saw_root = true;
                stack.push(name);
                starts.push(at);
                content.clear();
                if stack.len() == 2 && stack[1] == "object" {
                    object = Some(PartialObject {
                        line: line_column(bytes, at).0,
                        ..Default::default()
                    });
                }
            }
            Event::Text(t) => {
                content.push_str(&t.decode().map_err(|e| xml_error(at, e.to_string()))?);
            }
            Event::CData(t) => {
                content.push_str(&t.decode().map_err(|e| xml_error(at, e.to_string()))?);
            }
            Event::GeneralRef(r) => {
                let resolved = match r
                    .resolve_char_ref()
                    .map_err(|e| xml_error(at, e.to_string()))?
                {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| xml_error(at, e.to_string()))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| xml_error(at, format!("unknown entity &{name};")))?
                            .to_owned()
                    }
                };
                content.push_str(&resolved);
            }
            Event::End(_) => {
                let start = starts.pop().unwrap_or(at);
                let path_names: Vec<&str> = stack.iter().map(String::as_str).collect();
                let value = content.trim();
                let number = |what: &str| -> Result<f32, AnnotationError> {
                    value
                        .parse::<f32>()
                        .map_err(|_| invalid(start, what, format!("{value:?} is not a number")))
                };
                match path_names.as_slice() {
                    ["annotation", "filename"] => {
                        check_file_name(value, path, || {
                            format!("line {}: <filename>", line_column(bytes, start).0)
                        })?;
                        file_name = Some(value.to_owned())
                    }
                    ["annotation", "size", dim @ ("width" | "height")] => {
                        let v: u32 = value.parse().map_err(|_| {
                            invalid(
                                start,
                                &format!("<{dim}>"),
                                format!("{value:?} is not a pixel count"),
                            )
                        })?;
                        if *dim == "width" {
                            width = Some(v)
                        } else {
                            height = Some(v)
                        }
                    }
                    ["annotation", "object", field] => {
                        let o = object.as_mut().expect("inside <object>");
                        match *field {
                            "name" => o.name = Some(value.to_owned()),
                            "difficult" => {
                                o.difficult = match value {
                                    "0" | "" => false,
                                    "1" => true,
                                    _ => {
                                        return Err(invalid(
                                            start,
                                            "<difficult>",
                                            format!("{value:?} is not 0 or 1"),
                                        ))
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    ["annotation", "object", "bndbox", coord] => {
                        let o = object.as_mut().expect("inside <object>");
                        if let Some(i) = ["xmin", "ymin", "xmax", "ymax"]
                            .iter()
                            .position(|c| c == coord)
                        {
                            o.coords[i] = Some(number(&format!("<{coord}>"))?);
                        }
                    }
                    ["annotation", "object"] => {
                        let o = object.take().expect("inside <object>");
                        let missing =
                            |what: &str| invalid(start, "<object>", format!("has no {what}"));
                        let name = o.name.ok_or_else(|| missing("<name>"))?;
                        let [xmin, ymin, xmax, ymax] = o.coords;
                        objects.push(VocObject {
                            name,
                            difficult: o.difficult,
                            xmin: xmin.ok_or_else(|| missing("<bndbox><xmin>"))?,
                            ymin: ymin.ok_or_else(|| missing("<bndbox><ymin>"))?,
                            xmax: xmax.ok_or_else(|| missing("<bndbox><xmax>"))?,
                            ymax: ymax.ok_or_else(|| missing("<bndbox><ymax>"))?,
                            line: o.line,
                        });
                    }
                    _ => {}
                }
                stack.pop();
                content.clear();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some(open) = stack.last() {
        return Err(xml_error(bytes.len(), format!("<{open}> is never closed")));
    }
    if !saw_root {
        return Err(xml_error(bytes.len(), "no <annotation> element".into()));
    }
    let at_end = bytes.len();
    Ok(VocAnnotation {
        file_name,
        width: width
            .ok_or_else(|| invalid(at_end, "<annotation>", "has no <size><width>".into()))?,
        height: height
            .ok_or_else(|| invalid(at_end, "<annotation>", "has no <size><height>".into()))?,
        objects,
    })
}
