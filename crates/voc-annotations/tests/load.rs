//! Loading both sources: small hand-written inputs for every refusal and
//! repair, and the real VOC 2007 train split where it is present.

use std::path::{Path, PathBuf};

use voc_annotations::{load_coco_json, load_voc_xml, AnnotationError, Dataset};

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A COCO JSON with two images (12: 500x333, 17: 480x364), the 20 VOC
/// categories, and the given annotation objects.
fn coco_json<S: AsRef<str>>(annotations: &[S]) -> String {
    let categories: Vec<String> = voc_annotations::VOC_CLASSES
        .iter()
        .zip(1..)
        .map(|(n, id)| format!(r#"{{"supercategory": "none", "id": {id}, "name": "{n}"}}"#))
        .collect();
    format!(
        r#"{{"images": [{{"file_name": "000012.jpg", "height": 333, "width": 500, "id": 12}},
 {{"file_name": "000017.jpg", "height": 364, "width": 480, "id": 17}}],
 "type": "instances",
 "annotations": [{}],
 "categories": [{}]}}"#,
        annotations
            .iter()
            .map(AsRef::as_ref)
            .collect::<Vec<_>>()
            .join(",\n "),
        categories.join(", ")
    )
}

fn ann(id: u32, image_id: u64, category_id: u32, bbox: [i32; 4], ignore: u8) -> String {
    format!(
        r#"{{"segmentation": [[1, 2, 3, 4]], "area": 10, "iscrowd": 0, "image_id": {image_id}, "bbox": {bbox:?}, "category_id": {category_id}, "id": {id}, "ignore": {ignore}}}"#
    )
}

fn load_json_text(text: &str) -> (tempfile::TempDir, PathBuf, Result<Dataset, AnnotationError>) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("pascal_train2007.json");
    write(&path, text);
    let result = load_coco_json(&path);
    (dir, path, result)
}

fn voc_xml(file_name: &str, width: u32, height: u32, objects: &[(&str, u8, [i32; 4])]) -> String {
    let objects: String = objects
        .iter()
        .map(|(name, difficult, [xmin, ymin, xmax, ymax])| {
            format!(
                "\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Left</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>{difficult}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n"
            )
        })
        .collect();
    format!(
        "<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{file_name}</filename>\n\t<source>\n\t\t<annotation>PASCAL VOC2007</annotation>\n\t</source>\n\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t<depth>3</depth>\n\t</size>\n{objects}</annotation>\n"
    )
}

/// A devkit `VOC2007` folder with the given `(stem, xml)` files, all listed in train.txt.
fn devkit(files: &[(&str, String)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path();
    let list: String = files.iter().map(|(stem, _)| format!("{stem}\n")).collect();
    write(&voc.join("ImageSets/Main/train.txt"), &list);
    for (stem, xml) in files {
        write(&voc.join(format!("Annotations/{stem}.xml")), xml);
    }
    dir
}

fn error_text(e: &AnnotationError) -> String {
    e.to_string()
}

#[test]
fn json_and_xml_of_the_same_annotations_give_the_same_dataset() {
    let json = coco_json(&[
        ann(1, 12, 7, [155, 96, 196, 174], 0),
        ann(2, 17, 15, [184, 61, 95, 138], 0),
        ann(3, 17, 13, [89, 77, 314, 259], 0),
        ann(4, 17, 15, [10, 10, 5, 5], 1),
    ]);
    let (_d, _p, from_json) = load_json_text(&json);
    let from_json = from_json.unwrap();
    let kit = devkit(&[
        (
            "000012",
            voc_xml("000012.jpg", 500, 333, &[("car", 0, [156, 97, 351, 270])]),
        ),
        (
            "000017",
            voc_xml(
                "000017.jpg",
                480,
                364,
                &[
                    ("person", 0, [185, 62, 279, 199]),
                    ("horse", 0, [90, 78, 403, 336]),
                    ("person", 1, [11, 11, 15, 15]),
                ],
            ),
        ),
    ]);
    let from_xml = load_voc_xml(kit.path(), "train").unwrap();
    assert_eq!(from_json, from_xml);
    assert_eq!(from_json.stats.ignored, 1);
    assert_eq!(
        from_json.images[0].objects[0].bbox,
        [96.0, 155.0, 269.0, 350.0]
    );
    assert_eq!(from_json.images[1].objects.len(), 2);
    assert_eq!(from_json.category_name(13), Some("horse"));
}

#[test]
fn malformed_json_names_file_line_and_column() {
    let text = "{\"images\": [\n  {\"file_name\": \"a.jpg\",, \"id\": 1}\n]}";
    let (_d, path, result) = load_json_text(text);
    match result.unwrap_err() {
        e @ AnnotationError::Json { line, column, .. } => {
            assert_eq!(line, 2);
            assert_eq!(column, 25);
            assert!(error_text(&e).contains(&path.display().to_string()), "{e}");
        }
        e => panic!("expected a JSON error, got {e}"),
    }
}

#[test]
fn json_with_wrong_types_or_missing_fields_is_refused_with_position() {
    for text in [
        coco_json(&[r#"{"image_id": 12, "bbox": [1, 2, 3], "category_id": 1, "id": 1}"#]),
        coco_json(&[r#"{"image_id": 12, "category_id": 1, "id": 1}"#]),
        coco_json(&[r#"{"image_id": "12", "bbox": [1, 2, 3, 4], "category_id": 1}"#]),
        coco_json(&[r#"{"image_id": 12, "bbox": [1, 2, 3, 4], "category_id": 1, "ignore": 7}"#]),
        String::new(),
    ] {
        let (_d, _p, result) = load_json_text(&text);
        assert!(
            matches!(result, Err(AnnotationError::Json { line, .. }) if line >= 1),
            "{text}"
        );
    }
}

#[test]
fn json_annotation_naming_unknown_image_or_category_is_refused() {
    let (_d, _p, result) = load_json_text(&coco_json(&[
        ann(1, 12, 7, [1, 1, 5, 5], 0),
        ann(9, 99, 7, [1, 1, 5, 5], 0),
    ]));
    match result.unwrap_err() {
        e @ AnnotationError::UnknownImage { image_id: 99, .. } => {
            assert!(e.to_string().contains("annotation id 9"), "{e}")
        }
        e => panic!("expected unknown image, got {e}"),
    }
    let (_d, _p, result) = load_json_text(&coco_json(&[ann(4, 12, 21, [1, 1, 5, 5], 0)]));
    assert!(
        matches!(result, Err(AnnotationError::UnknownCategory { .. })),
        "{result:?}"
    );
}

#[test]
fn json_box_of_zero_or_negative_size_is_refused_even_if_ignored() {
    for (bbox, ignore) in [
        ([10, 10, 0, 5], 0),
        ([10, 10, 5, 0], 0),
        ([10, 10, -3, 5], 0),
        ([10, 10, 0, 0], 1),
    ] {
        let (_d, path, result) = load_json_text(&coco_json(&[ann(3, 12, 1, bbox, ignore)]));
        match result {
            Err(e @ AnnotationError::EmptyBox { .. }) => {
                let text = e.to_string();
                assert!(
                    text.contains(&path.display().to_string()) && text.contains("annotation id 3"),
                    "{text}"
                );
            }
            other => panic!("{bbox:?}: expected an empty-box error, got {other:?}"),
        }
    }
}

#[test]
fn json_box_partly_outside_is_clamped_and_counted() {
    // Image 12 is 500x333: x from -5 and y up to 340 stick out.
    let (_d, _p, result) = load_json_text(&coco_json(&[
        ann(1, 12, 1, [-5, 300, 20, 41], 0),
        ann(2, 12, 1, [0, 0, 500, 333], 0),
    ]));
    let ds = result.unwrap();
    assert_eq!(ds.stats.clamped, 1);
    assert_eq!(ds.images[0].objects[0].bbox, [300.0, 0.0, 332.0, 14.0]);
    assert_eq!(ds.images[0].objects[1].bbox, [0.0, 0.0, 332.0, 499.0]);
}

#[test]
fn json_box_entirely_outside_is_refused() {
    let (_d, _p, result) = load_json_text(&coco_json(&[ann(1, 12, 1, [500, 10, 20, 20], 0)]));
    assert!(
        matches!(
            result,
            Err(AnnotationError::BoxOutsideImage {
                width: 500,
                height: 333,
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn json_duplicate_image_id_and_missing_file_are_refused() {
    let text = coco_json::<&str>(&[]).replace("\"id\": 17}", "\"id\": 12}");
    let (_d, _p, result) = load_json_text(&text);
    assert!(
        matches!(&result, Err(AnnotationError::Invalid { message, .. }) if message.contains("duplicate")),
        "{result:?}"
    );

    let missing = Path::new("/nonexistent/pascal_train2007.json");
    match load_coco_json(missing).unwrap_err() {
        e @ AnnotationError::Io { .. } => {
            assert!(e.to_string().contains("/nonexistent/pascal_train2007.json"))
        }
        e => panic!("expected io error, got {e}"),
    }
}

#[test]
fn malformed_xml_names_file_and_line() {
    let broken = voc_xml("000012.jpg", 500, 333, &[("car", 0, [1, 1, 5, 5])])
        .replace("</pose>", "</posture>");
    let kit = devkit(&[("000012", broken)]);
    match load_voc_xml(kit.path(), "train").unwrap_err() {
        e @ AnnotationError::Xml { line, .. } => {
            assert_eq!(line, 14, "{e}");
            assert!(e.to_string().contains("000012.xml"), "{e}");
        }
        e => panic!("expected an XML error, got {e}"),
    }
    for truncated in ["<annotation><size><width>5</width>", "", "not xml at all"] {
        let kit = devkit(&[("000012", truncated.to_owned())]);
        let result = load_voc_xml(kit.path(), "train");
        assert!(
            matches!(result, Err(AnnotationError::Xml { .. })),
            "{truncated:?}: {result:?}"
        );
    }
}

#[test]
fn xml_bad_values_are_refused_with_their_line() {
    let bad_number = voc_xml("000012.jpg", 500, 333, &[("car", 0, [1, 1, 5, 5])])
        .replace("<ymax>5<", "<ymax>five<");
    let unknown_class = voc_xml("000012.jpg", 500, 333, &[("unicorn", 0, [1, 1, 5, 5])]);
    let empty_box = voc_xml("000012.jpg", 500, 333, &[("car", 0, [10, 1, 9, 5])]);
    let outside = voc_xml("000012.jpg", 500, 333, &[("car", 0, [600, 1, 700, 5])]);
    let no_size = voc_xml("000012.jpg", 500, 333, &[]).replace("<width>500</width>", "");
    for (xml, expect) in [
        (bad_number, "line 21: <ymax>"),
        (unknown_class, "\"unicorn\""),
        (empty_box, "zero or negative size"),
        (outside, "entirely outside"),
        (no_size, "has no <size><width>"),
    ] {
        let kit = devkit(&[("000012", xml)]);
        let e = load_voc_xml(kit.path(), "train").unwrap_err().to_string();
        assert!(
            e.contains("000012.xml") && e.contains(expect),
            "expected {expect:?} in {e}"
        );
    }
}

#[test]
fn xml_difficult_is_dropped_and_partly_outside_is_clamped() {
    let xml = voc_xml(
        "000012.jpg",
        500,
        333,
        &[("car", 1, [1, 1, 5, 5]), ("dog", 0, [480, 300, 510, 340])],
    );
    let kit = devkit(&[("000012", xml)]);
    let ds = load_voc_xml(kit.path(), "train").unwrap();
    assert_eq!(
        ds.stats,
        voc_annotations::LoadStats {
            ignored: 1,
            clamped: 1
        }
    );
    assert_eq!(
        ds.images[0].objects,
        vec![voc_annotations::Object {
            bbox: [299.0, 479.0, 332.0, 499.0],
            category_id: 12
        }]
    );
}

#[test]
fn xml_listed_file_missing_or_dir_unreadable_is_refused() {
    let kit = devkit(&[("000012", voc_xml("000012.jpg", 500, 333, &[]))]);
    write(
        &kit.path().join("ImageSets/Main/train.txt"),
        "000012\n000017\n",
    );
    match load_voc_xml(kit.path(), "train").unwrap_err() {
        e @ AnnotationError::MissingListedFile { .. } => {
            let text = e.to_string();
            assert!(
                text.contains("000017.xml") && text.contains("train.txt"),
                "{text}"
            );
        }
        e => panic!("expected a missing listed file, got {e}"),
    }
    let nowhere = kit.path().join("no-such-dir");
    let e = load_voc_xml(&nowhere, "train").unwrap_err();
    assert!(
        matches!(e, AnnotationError::Io { ref path, .. } if path.starts_with(&nowhere)),
        "{e}"
    );
    let e = load_voc_xml(kit.path(), "val").unwrap_err();
    assert!(e.to_string().contains("val.txt"), "{e}");
}

#[test]
fn real_voc2007_json_and_xml_agree() {
    let Some(dir) = shared_voc::voc2007() else {
        return;
    };
    let from_json = load_coco_json(&dir.join("pascal_train2007.json")).unwrap();
    let from_xml = load_voc_xml(&dir.join("VOCdevkit/VOC2007"), "train").unwrap();
    assert_eq!(from_json.images.len(), 2501);
    // README: 7844 annotations, 1543 flagged ignore.
    assert_eq!(from_json.stats.ignored, 1543);
    assert_eq!(from_json.object_count(), 7844 - 1543);
    assert_eq!(from_json.categories.len(), 20);
    let first = &from_json.images[0];
    assert_eq!(
        (
            first.id,
            first.file_name.as_str(),
            first.width,
            first.height
        ),
        (12, "000012.jpg", 500, 333)
    );
    assert_eq!(first.objects[0].bbox, [96.0, 155.0, 269.0, 350.0]);
    assert_eq!(
        from_json.category_name(first.objects[0].category_id),
        Some("car")
    );
    assert_eq!(from_json, from_xml);
}

#[test]
fn sparse_and_dense_image_ids_both_resolve() {
    // 17 -> 2007000017 makes the ids too sparse for a flat table.
    for (old, new) in [
        ("\"id\": 17}", "\"id\": 2007000017}"),
        ("\"id\": 17}", "\"id\": 17}"),
    ] {
        let text = coco_json(&[
            ann(1, 12, 7, [1, 1, 5, 5], 0),
            ann(2, 17, 3, [2, 2, 5, 5], 0),
        ])
        .replace(old, new)
        .replace(
            "\"image_id\": 17,",
            &format!(
                "\"image_id\": {},",
                new.trim_start_matches("\"id\": ").trim_end_matches('}')
            ),
        );
        let (_d, _p, result) = load_json_text(&text);
        let ds = result.unwrap();
        assert_eq!(
            ds.images[1].objects,
            vec![voc_annotations::Object {
                bbox: [2.0, 2.0, 6.0, 6.0],
                category_id: 3
            }]
        );
        let (_d, _p, result) =
            load_json_text(&text.replace("\"image_id\": 12,", "\"image_id\": 13,"));
        assert!(
            matches!(
                result,
                Err(AnnotationError::UnknownImage { image_id: 13, .. })
            ),
            "{result:?}"
        );
    }
}

#[test]
fn json_file_name_leaving_the_images_folder_is_refused_naming_file_and_image() {
    for (name, reason) in [
        ("../../../../etc/passwd", "`..` component"),
        ("/etc/passwd", "is absolute"),
        ("", "is empty"),
    ] {
        let text = coco_json(&[ann(1, 12, 7, [1, 1, 5, 5], 0)]).replace(
            "\"file_name\": \"000017.jpg\"",
            &format!("\"file_name\": {name:?}"),
        );
        let (_d, path, result) = load_json_text(&text);
        let e = result.unwrap_err();
        let text = e.to_string();
        assert!(
            matches!(e, AnnotationError::Invalid { .. })
                && text.starts_with(&format!("{}: images[1] (id 17): ", path.display()))
                && text.contains(&format!("{name:?}"))
                && text.contains(reason),
            "{text}"
        );
    }
}

#[test]
fn xml_file_name_leaving_the_images_folder_is_refused_naming_file_and_line() {
    let xml = voc_xml(
        "../../../../etc/passwd",
        500,
        333,
        &[("car", 0, [1, 1, 5, 5])],
    );
    let kit = devkit(&[("000012", xml)]);
    let e = load_voc_xml(kit.path(), "train").unwrap_err().to_string();
    assert!(
        e.contains("000012.xml: line 3: <filename>")
            && e.contains("\"../../../../etc/passwd\" has a `..` component"),
        "{e}"
    );
}

#[test]
fn json_without_a_usable_box_is_refused_saying_why() {
    let no_images =
        r#"{"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}"#;
    let cases = [
        (
            coco_json::<&str>(&[]),
            "no annotations at all (for 2 images)",
        ),
        (
            coco_json(&[
                ann(1, 12, 7, [1, 1, 5, 5], 1),
                ann(2, 17, 7, [1, 1, 5, 5], 1),
            ]),
            "all 2 boxes (of 2 images) are flagged `ignore`",
        ),
        (no_images.to_owned(), "lists no images"),
    ];
    for (text, why) in cases {
        let (_d, path, result) = load_json_text(&text);
        match result {
            Err(e @ AnnotationError::NoUsableBox { .. }) => {
                let message = e.to_string();
                assert!(
                    message.starts_with(&format!("{}: no usable box: ", path.display()))
                        && message.contains(why),
                    "{message}"
                );
            }
            other => panic!("expected no usable box ({why}), got {other:?}"),
        }
    }
    // One usable box is enough; the image without one is left to largest-object.
    let (_d, _p, result) = load_json_text(&coco_json(&[ann(1, 12, 7, [1, 1, 5, 5], 0)]));
    assert_eq!(result.unwrap().object_count(), 1);
}

#[test]
fn xml_without_a_usable_box_is_refused_naming_the_list() {
    let all_difficult = devkit(&[
        (
            "000012",
            voc_xml("000012.jpg", 500, 333, &[("car", 1, [1, 1, 5, 5])]),
        ),
        ("000017", voc_xml("000017.jpg", 480, 364, &[])),
    ]);
    let no_objects = devkit(&[("000012", voc_xml("000012.jpg", 500, 333, &[]))]);
    let empty_list = devkit(&[]);
    std::fs::create_dir_all(empty_list.path().join("Annotations")).unwrap();
    for (kit, why) in [
        (
            &all_difficult,
            "the only box (of 2 images) is flagged <difficult>",
        ),
        (&no_objects, "no annotations at all (for 1 image)"),
        (&empty_list, "lists no images"),
    ] {
        let e = load_voc_xml(kit.path(), "train").unwrap_err();
        let message = e.to_string();
        assert!(
            matches!(e, AnnotationError::NoUsableBox { .. })
                && message.contains("ImageSets/Main/train.txt: no usable box: ")
                && message.contains(why),
            "{message}"
        );
    }
}
