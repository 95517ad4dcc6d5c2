//! What `cargo xtask predict` says about a user's images: one [`ImagePrediction`]
//! per image, written by the trainer as JSON lines and read back by xtask to print,
//! draw and export. The same type on both sides, so the two cannot drift.

use serde::{Deserialize, Serialize};
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// A class and the model's probability for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassScore {
    pub class: String,
    pub prob: f32,
}

/// One object a detector found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DetectedObject {
    pub class: String,
    /// The class's probability (the sigmoid of its score).
    pub score: f32,
    /// `[top, left, bottom, right]` in the image's pixels (as viewed).
    pub bbox: [f32; 4],
}

/// The model's answer for one image, or why there is none.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImagePrediction {
    /// The image file, as it was given.
    pub file: PathBuf,
    /// Size of the image as a photo viewer shows it (EXIF orientation applied); 0 when
    /// the image could not be read.
    #[serde(default)]
    pub width: u32,
    #[serde(default)]
    pub height: u32,
    /// Classifier and combined models: the most probable classes, best first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<ClassScore>,
    /// Box models: `[top, left, bottom, right]` in the image's pixels (as viewed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bbox: Option<[f32; 4]>,
    /// Detectors: every object found, best score first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objects: Vec<DetectedObject>,
    /// Set when the image could not be read or decoded: the reason. Such an image has
    /// no prediction; it is skipped and counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl ImagePrediction {
    /// An image that could not be read.
    pub fn skipped(file: PathBuf, reason: String) -> ImagePrediction {
        ImagePrediction {
            file,
            width: 0,
            height: 0,
            classes: Vec::new(),
            bbox: None,
            objects: Vec::new(),
            error: Some(reason),
        }
    }

    /// The most probable class, if the model predicts classes.
    pub fn best_class(&self) -> Option<&ClassScore> {
        self.classes.first()
    }
}

/// Writes one JSON object per line.
pub fn write_jsonl(out: &mut dyn Write, predictions: &[ImagePrediction]) -> io::Result<()> {
    for p in predictions {
        serde_json::to_writer(&mut *out, p)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// Reads what [`write_jsonl`] wrote; a bad line is an error naming the file and line.
pub fn read_jsonl(path: &Path) -> Result<Vec<ImagePrediction>, crate::CsvError> {
    let file = std::fs::File::open(path).map_err(|source| crate::CsvError::Io {
        path: path.to_owned(),
        source,
    })?;
    let mut predictions = Vec::new();
    for (i, line) in io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| crate::CsvError::Io {
            path: path.to_owned(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let p = serde_json::from_str(&line).map_err(|e| crate::CsvError::BadRow {
            path: path.to_owned(),
            line: i as u64 + 1,
            message: format!("not an image prediction: {e}"),
        })?;
        predictions.push(p);
    }
    Ok(predictions)
}

pub const PREDICTIONS_HEADER: [&str; 7] =
    ["file", "width", "height", "class", "prob", "bbox", "error"];

/// Writes the predictions as CSV, one row per image: the best class and its
/// probability, the box as `top left bottom right` (empty when the model does not
/// predict that), and the reason an image was skipped. A detector's image gets one
/// row per object found (class, score, box), or one empty row when it found none.
pub fn write_predictions_csv(path: &Path, predictions: &[ImagePrediction]) -> io::Result<()> {
    crate::write_atomic(path, |out| {
        crate::write_record(out, &PREDICTIONS_HEADER)?;
        for p in predictions {
            let mut rows: Vec<(String, String, String)> = p
                .objects
                .iter()
                .map(|o| {
                    (
                        o.class.clone(),
                        format!("{:.4}", o.score),
                        crate::format_bbox(&o.bbox),
                    )
                })
                .collect();
            if rows.is_empty() {
                let (class, prob) = match p.best_class() {
                    Some(c) => (c.class.clone(), format!("{:.4}", c.prob)),
                    None => (String::new(), String::new()),
                };
                let bbox = p.bbox.map(|b| crate::format_bbox(&b)).unwrap_or_default();
                rows.push((class, prob, bbox));
            }
            let file = p.file.to_string_lossy();
            for (class, prob, bbox) in rows {
                crate::write_record(
                    out,
                    &[
                        &file,
                        &p.width.to_string(),
                        &p.height.to_string(),
                        &class,
                        &prob,
                        &bbox,
                        p.error.as_deref().unwrap_or(""),
                    ],
                )?;
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_round_trips_and_names_a_bad_line() {
        let predictions = vec![
            ImagePrediction {
                file: "a/b.jpg".into(),
                width: 500,
                height: 375,
                classes: vec![ClassScore {
                    class: "dog".into(),
                    prob: 0.75,
                }],
                bbox: Some([1.5, 2.0, 300.0, 400.0]),
                objects: Vec::new(),
                error: None,
            },
            ImagePrediction::skipped("bad.jpg".into(), "cannot decode".into()),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.jsonl");
        let mut bytes = Vec::new();
        write_jsonl(&mut bytes, &predictions).unwrap();
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read_jsonl(&path).unwrap(), predictions);

        std::fs::write(&path, b"{\"file\": \"x.jpg\"}\nnot json\n").unwrap();
        let e = read_jsonl(&path).unwrap_err().to_string();
        assert!(e.contains("p.jsonl:2"), "{e}");
    }

    #[test]
    fn csv_has_one_row_per_image_or_per_detected_object() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.csv");
        let predictions = vec![
            ImagePrediction {
                file: "x,y.jpg".into(),
                width: 10,
                height: 20,
                classes: Vec::new(),
                bbox: Some([1.0, 2.0, 3.0, 4.0]),
                objects: Vec::new(),
                error: None,
            },
            ImagePrediction::skipped("z.jpg".into(), "missing".into()),
            ImagePrediction {
                file: "d.jpg".into(),
                width: 10,
                height: 20,
                classes: Vec::new(),
                bbox: None,
                objects: ["dog", "cat"]
                    .iter()
                    .map(|&class| DetectedObject {
                        class: class.into(),
                        score: 0.5,
                        bbox: [1.0, 2.0, 3.0, 4.0],
                    })
                    .collect(),
                error: None,
            },
        ];
        write_predictions_csv(&path, &predictions).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "file,width,height,class,prob,bbox,error\n\"x,y.jpg\",10,20,,,1 2 3 4,\nz.jpg,0,0,,,,missing\n\
             d.jpg,10,20,dog,0.5000,1 2 3 4,\nd.jpg,10,20,cat,0.5000,1 2 3 4,\n"
        );
    }
}
