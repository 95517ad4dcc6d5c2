//! A detector's predictions on disk, as the `predict` stage writes them and the
//! `evaluate` and `draw` stages read them: `detections.csv` (`fn,cat,score,bbox`,
//! one row per detection, boxes in inclusive pixels of the original image) and
//! the list of the images that were scored (`fn`), which also names the images
//! where nothing was found.

use std::path::Path;

use csv_export::{format_bbox, parse_bbox, read_rows, write_rows, CsvError};

/// The detections file's header.
pub const DETECTIONS_HEADER: [&str; 4] = ["fn", "cat", "score", "bbox"];
/// The scored images file's header.
pub const IMAGES_HEADER: [&str; 1] = ["fn"];

/// One detection of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectionRow {
    pub file_name: String,
    pub class: String,
    /// The class's probability, in `0..=1`.
    pub score: f32,
    /// `[top, left, bottom, right]`, original image pixels.
    pub bbox: [f32; 4],
}

/// Writes `rows` (atomically) in their order.
pub fn write_detections(path: &Path, rows: &[DetectionRow]) -> Result<(), CsvError> {
    let fields: Vec<[String; 3]> = rows
        .iter()
        .map(|r| {
            [
                r.class.clone(),
                format!("{:.6}", r.score),
                format_bbox(&r.bbox),
            ]
        })
        .collect();
    write_rows(
        path,
        DETECTIONS_HEADER,
        rows.iter().zip(&fields).map(|(r, [class, score, bbox])| {
            [
                r.file_name.as_str(),
                class.as_str(),
                score.as_str(),
                bbox.as_str(),
            ]
        }),
    )
}

/// Reads what [`write_detections`] wrote, checking every row: a score in
/// `0..=1`, a box of four numbers.
pub fn read_detections(path: &Path) -> Result<Vec<DetectionRow>, CsvError> {
    read_rows(path, DETECTIONS_HEADER, |[file_name, class, score, bbox]| {
        let score: f32 = score
            .parse()
            .map_err(|_| format!("score {score:?} is not a number"))?;
        if !(0.0..=1.0).contains(&score) {
            return Err(format!("score {score} is not between 0 and 1"));
        }
        if class.is_empty() {
            return Err("empty class".into());
        }
        Ok(DetectionRow {
            file_name: file_name.to_owned(),
            class: class.to_owned(),
            score,
            bbox: parse_bbox(bbox)?,
        })
    })
}

/// Writes the scored images' file names (atomically).
pub fn write_image_list(path: &Path, file_names: &[&str]) -> Result<(), CsvError> {
    write_rows(path, IMAGES_HEADER, file_names.iter().map(|&name| [name]))
}

/// Reads what [`write_image_list`] wrote; a name listed twice is an error.
pub fn read_image_list(path: &Path) -> Result<Vec<String>, CsvError> {
    let mut seen = std::collections::HashSet::new();
    read_rows(path, IMAGES_HEADER, |[file_name]| {
        if file_name.is_empty() {
            return Err("empty file name".into());
        }
        if !seen.insert(file_name.to_owned()) {
            return Err(format!("{file_name} is listed twice"));
        }
        Ok(file_name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detections_and_image_lists_round_trip_and_bad_rows_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("detections.csv");
        let rows = vec![
            DetectionRow {
                file_name: "a.jpg".into(),
                class: "dog".into(),
                score: 0.875,
                bbox: [1.0, 2.5, 30.0, 40.0],
            },
            DetectionRow {
                file_name: "a.jpg".into(),
                class: "cat".into(),
                score: 0.25,
                bbox: [0.0, 0.0, 10.0, 10.0],
            },
        ];
        write_detections(&path, &rows).unwrap();
        assert_eq!(read_detections(&path).unwrap(), rows);

        std::fs::write(&path, "fn,cat,score,bbox\na.jpg,dog,1.5,1 2 3 4\n").unwrap();
        let e = read_detections(&path).unwrap_err().to_string();
        assert!(e.contains("detections.csv") && e.contains("1.5"), "{e}");

        let list = dir.path().join("images.csv");
        write_image_list(&list, &["a.jpg", "b.jpg"]).unwrap();
        assert_eq!(read_image_list(&list).unwrap(), ["a.jpg", "b.jpg"]);
        std::fs::write(&list, "fn\na.jpg\na.jpg\n").unwrap();
        let e = read_image_list(&list).unwrap_err().to_string();
        assert!(e.contains("twice") && e.contains(":3"), "{e}");
    }
}
