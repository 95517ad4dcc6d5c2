//! The annotations stage's first two steps on bad input: the error comes from
//! the source (naming its file), never an empty CSV for a later stage to find.

use std::path::Path;

use voc_annotations::{load_coco_json, AnnotationError};

fn write_json(dir: &Path, images: &str, annotations: &str) -> std::path::PathBuf {
    let path = dir.join("pascal_train2007.json");
    std::fs::write(
        &path,
        format!(
            r#"{{"images": [{images}], "annotations": [{annotations}],
                "categories": [{{"id": 7, "name": "car"}}]}}"#
        ),
    )
    .unwrap();
    path
}

const IMAGE_12: &str = r#"{"file_name": "000012.jpg", "height": 333, "width": 500, "id": 12}"#;

#[test]
fn an_annotation_file_without_a_usable_box_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    for (annotations, why) in [
        ("", "no annotations at all"),
        (
            r#"{"image_id": 12, "bbox": [1, 1, 5, 5], "category_id": 7, "id": 1, "ignore": 1}"#,
            "the only box (of 1 image) is flagged `ignore`",
        ),
    ] {
        let path = write_json(dir.path(), IMAGE_12, annotations);
        let error = load_coco_json(&path).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, AnnotationError::NoUsableBox { .. })
                && message.starts_with(&format!("{}: no usable box: ", path.display()))
                && message.contains(why),
            "{message}"
        );
    }
}

#[test]
fn a_file_name_out_of_the_images_folder_never_reaches_bb_csv() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_json(
        dir.path(),
        r#"{"file_name": "../../../../etc/passwd", "height": 333, "width": 500, "id": 12}"#,
        r#"{"image_id": 12, "bbox": [1, 1, 5, 5], "category_id": 7, "id": 1, "ignore": 0}"#,
    );
    let message = load_coco_json(&path).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("{}: images[0] (id 12): ", path.display()))
            && message.contains("\"../../../../etc/passwd\" has a `..` component"),
        "{message}"
    );
}
