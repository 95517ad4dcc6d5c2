//! Readers for the artifacts the training stages write: metrics CSV, lr_find
//! CSV + JSON, bbox, class and combined (class and box) prediction CSVs. The
//! row types and headers are csv-export's, which the trainer writes with.
//! Every error names the file, and the line where one applies.

use crate::{Result, VizError};
use std::path::{Path, PathBuf};

pub use csv_export::{
    BboxPrediction, ClassPrediction, CombinedPrediction, LrFindPoint, LrSuggestion,
};
use csv_export::{
    BBOX_PREDICTIONS_HEADER, CLASS_PREDICTIONS_HEADER, COMBINED_PREDICTIONS_HEADER, LR_FIND_HEADER,
    METRICS_LEADING_COLUMNS, METRICS_SECONDS_COLUMN,
};

/// A metrics CSV (`epoch,trn_loss,val_loss,<metrics...>,seconds`): every
/// column numeric; an empty cell reads as NaN (e.g. no validation that epoch).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsTable {
    pub path: PathBuf,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<f64>>,
}

impl MetricsTable {
    pub fn column(&self, name: &str) -> Option<Vec<f64>> {
        let index = self.columns.iter().position(|c| c == name)?;
        Some(self.rows.iter().map(|row| row[index]).collect())
    }
    /// The metric columns between the losses and `seconds`, in file order.
    pub fn metric_columns(&self) -> Vec<&str> {
        self.columns
            .iter()
            .map(String::as_str)
            .filter(|c| !METRICS_LEADING_COLUMNS.contains(c) && *c != METRICS_SECONDS_COLUMN)
            .collect()
    }
}

/// A CSV as strings: header and rows, for tables in the report and summaries.
#[derive(Debug, Clone, PartialEq)]
pub struct StringTable {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

fn reader(path: &Path) -> Result<csv::Reader<std::fs::File>> {
    let file = std::fs::File::open(path).map_err(|e| VizError::io(path, e))?;
    Ok(csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file))
}

fn csv_error(path: &Path, error: csv::Error) -> VizError {
    let line = error.position().map(|p| p.line()).unwrap_or(0);
    match error.into_kind() {
        csv::ErrorKind::Io(e) => VizError::io(path, e),
        kind => VizError::Parse {
            path: path.to_path_buf(),
            line,
            message: format!("{kind:?}"),
        },
    }
}

/// Reads the header and checks it is exactly `expected`.
fn expect_header(
    path: &Path,
    reader: &mut csv::Reader<std::fs::File>,
    expected: &[&str],
) -> Result<()> {
    let header = reader.headers().map_err(|e| csv_error(path, e))?;
    if header.iter().ne(expected.iter().copied()) {
        return Err(VizError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: format!(
                "header is `{}`, expected `{}`",
                header.iter().collect::<Vec<_>>().join(","),
                expected.join(",")
            ),
        });
    }
    Ok(())
}

/// Reads every data row, with its 1-based line number, after checking the header.
fn records(path: &Path, expected_header: &[&str]) -> Result<Vec<(u64, csv::StringRecord)>> {
    let mut reader = reader(path)?;
    expect_header(path, &mut reader, expected_header)?;
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        rows.push((line, record));
    }
    Ok(rows)
}

fn parse_error(path: &Path, line: u64, message: String) -> VizError {
    VizError::Parse {
        path: path.to_path_buf(),
        line,
        message,
    }
}

fn parse_f64(path: &Path, line: u64, column: &str, text: &str) -> Result<f64> {
    if text.trim().is_empty() {
        return Ok(f64::NAN);
    }
    text.trim().parse().map_err(|_| {
        parse_error(
            path,
            line,
            format!("column `{column}`: `{text}` is not a number"),
        )
    })
}

/// Parses a space-separated `top left bottom right` box. Unlike
/// `csv_export::parse_bbox` it accepts inverted boxes: an untrained model
/// predicts them, and they are still worth drawing.
pub fn parse_bbox(text: &str) -> Option<[f32; 4]> {
    let values: Vec<f32> = text
        .split_whitespace()
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let bbox: [f32; 4] = values.try_into().ok()?;
    bbox.iter().all(|v| v.is_finite()).then_some(bbox)
}

fn bbox_field(path: &Path, line: u64, column: &str, text: &str) -> Result<[f32; 4]> {
    parse_bbox(text).ok_or_else(|| {
        parse_error(path, line, format!("column `{column}`: `{text}` is not four space-separated numbers (top left bottom right)"))
    })
}

/// The `fn` column: a name inside the images folder ([`csv_export::check_file_name`]).
fn file_name_field(path: &Path, line: u64, text: &str) -> Result<String> {
    csv_export::check_file_name(text).map_err(|e| parse_error(path, line, e.to_string()))?;
    Ok(text.to_string())
}

pub fn read_bbox_predictions(path: &Path) -> Result<Vec<BboxPrediction>> {
    records(path, &BBOX_PREDICTIONS_HEADER)?
        .into_iter()
        .map(|(line, r)| {
            Ok(BboxPrediction {
                file_name: file_name_field(path, line, &r[0])?,
                bbox: bbox_field(path, line, "bbox", &r[1])?,
                true_bbox: bbox_field(path, line, "true_bbox", &r[2])?,
                iou: parse_f64(path, line, "iou", &r[3])? as f32,
            })
        })
        .collect()
}

pub fn read_class_predictions(path: &Path) -> Result<Vec<ClassPrediction>> {
    records(path, &CLASS_PREDICTIONS_HEADER)?
        .into_iter()
        .map(|(line, r)| {
            Ok(ClassPrediction {
                file_name: file_name_field(path, line, &r[0])?,
                category: r[1].to_string(),
                true_category: r[2].to_string(),
                prob: parse_f64(path, line, "prob", &r[3])? as f32,
            })
        })
        .collect()
}

pub fn read_combined_predictions(path: &Path) -> Result<Vec<CombinedPrediction>> {
    records(path, &COMBINED_PREDICTIONS_HEADER)?
        .into_iter()
        .map(|(line, r)| {
            Ok(CombinedPrediction {
                file_name: file_name_field(path, line, &r[0])?,
                category: r[1].to_string(),
                true_category: r[2].to_string(),
                prob: parse_f64(path, line, "prob", &r[3])? as f32,
                bbox: bbox_field(path, line, "bbox", &r[4])?,
                true_bbox: bbox_field(path, line, "true_bbox", &r[5])?,
                iou: parse_f64(path, line, "iou", &r[6])? as f32,
            })
        })
        .collect()
}

pub fn read_lr_find(path: &Path) -> Result<Vec<LrFindPoint>> {
    records(path, &LR_FIND_HEADER)?
        .into_iter()
        .map(|(line, r)| {
            let iteration = r[0].trim().parse().map_err(|_| {
                parse_error(
                    path,
                    line,
                    format!("column `iteration`: `{}` is not a whole number", &r[0]),
                )
            })?;
            let lr = parse_f64(path, line, "lr", &r[1])?;
            if lr.is_nan() || lr <= 0.0 {
                return Err(parse_error(
                    path,
                    line,
                    format!("column `lr`: {lr} is not positive"),
                ));
            }
            Ok(LrFindPoint {
                iteration,
                lr,
                loss: parse_f64(path, line, "loss", &r[2])?,
                smooth_loss: parse_f64(path, line, "smooth_loss", &r[3])?,
            })
        })
        .collect()
}

pub fn read_lr_suggestion(path: &Path) -> Result<LrSuggestion> {
    let text = std::fs::read_to_string(path).map_err(|e| VizError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| parse_error(path, e.line() as u64, e.to_string()))
}

pub fn read_metrics(path: &Path) -> Result<MetricsTable> {
    let mut reader = reader(path)?;
    let columns: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    for required in METRICS_LEADING_COLUMNS {
        if !columns.iter().any(|c| c == required) {
            return Err(parse_error(
                path,
                1,
                format!("header `{}` has no `{required}` column", columns.join(",")),
            ));
        }
    }
    let mut rows = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| csv_error(path, e))?;
        let line = record.position().map(|p| p.line()).unwrap_or(0);
        let row = columns
            .iter()
            .zip(record.iter())
            .map(|(column, text)| parse_f64(path, line, column, text))
            .collect::<Result<Vec<_>>>()?;
        rows.push(row);
    }
    Ok(MetricsTable {
        path: path.to_path_buf(),
        columns,
        rows,
    })
}

/// Any CSV with a header, as strings.
pub fn read_string_table(path: &Path) -> Result<StringTable> {
    let mut reader = reader(path)?;
    let header = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let rows = reader
        .records()
        .map(|r| {
            r.map(|r| r.iter().map(str::to_string).collect())
                .map_err(|e| csv_error(path, e))
        })
        .collect::<Result<_>>()?;
    Ok(StringTable { header, rows })
}

/// The first line of a CSV split on commas: how `show` tells artifacts apart.
pub fn read_header(path: &Path) -> Result<Vec<String>> {
    let mut reader = reader(path)?;
    Ok(reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::write;

    #[test]
    fn reads_bbox_predictions() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "p.csv",
            "fn,bbox,true_bbox,iou\n000012.jpg,96 155 269 350,90 150 270 349.5,0.81\n",
        );
        let rows = read_bbox_predictions(&path).unwrap();
        assert_eq!(
            rows,
            vec![BboxPrediction {
                file_name: "000012.jpg".into(),
                bbox: [96.0, 155.0, 269.0, 350.0],
                true_bbox: [90.0, 150.0, 270.0, 349.5],
                iou: 0.81
            }]
        );
    }

    /// What the trainer writes (csv-export's writers) reads back here as the
    /// same rows, at the precision the writers keep.
    #[test]
    fn the_training_stages_csvs_round_trip_through_their_writers() {
        let dir = tempfile::tempdir().unwrap();
        let combined = vec![CombinedPrediction {
            file_name: "000012.jpg".into(),
            category: "car".into(),
            true_category: "car, red".into(),
            prob: 0.5,
            bbox: [96.0, 155.5, 269.0, 350.0],
            true_bbox: [90.0, 150.0, 270.0, 349.5],
            iou: 0.8125,
        }];
        let path = dir.path().join("predictions/combined.csv");
        csv_export::ValidationPredictions::Combined(combined.clone())
            .write(&path)
            .unwrap();
        assert_eq!(read_combined_predictions(&path).unwrap(), combined);
        let classes: Vec<ClassPrediction> = vec![ClassPrediction {
            file_name: "a.jpg".into(),
            category: "dog".into(),
            true_category: "cat".into(),
            prob: 0.25,
        }];
        csv_export::ValidationPredictions::Classes(classes.clone())
            .write(&path)
            .unwrap();
        assert_eq!(read_class_predictions(&path).unwrap(), classes);

        let points = vec![
            LrFindPoint {
                iteration: 0,
                lr: 1e-5,
                loss: 2.5,
                smooth_loss: 2.5,
            },
            LrFindPoint {
                iteration: 1,
                lr: 1.5e-5,
                loss: 2.25,
                smooth_loss: 2.375,
            },
        ];
        let curve = dir.path().join("lr_find.csv");
        csv_export::write_lr_find(&curve, &points).unwrap();
        assert_eq!(read_lr_find(&curve).unwrap(), points);
        let suggestion = LrSuggestion {
            suggested_lr: 1e-3,
            min_loss_lr: 1e-2,
        };
        let json = dir.path().join("lr_find.json");
        suggestion.write(&json).unwrap();
        assert_eq!(read_lr_suggestion(&json).unwrap(), suggestion);

        let metrics = dir.path().join("metrics.csv");
        let epoch = csv_export::EpochMetrics {
            epoch: 0,
            trn_loss: 1.5,
            val_loss: 1.25,
            metrics: vec![0.75],
            seconds: 12.5,
        };
        csv_export::write_metrics(&metrics, &["accuracy"], &[epoch]).unwrap();
        let table = read_metrics(&metrics).unwrap();
        assert_eq!(table.metric_columns(), vec!["accuracy"]);
        assert_eq!(table.rows, vec![vec![0.0, 1.5, 1.25, 0.75, 12.5]]);
    }

    #[test]
    fn bad_rows_name_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            (
                "fn,bbox,true_bbox,iou\na.jpg,1 2 3 4,1 2 3 4,0.5\nb.jpg,1 2 3,1 2 3 4,0.5\n",
                "line 3",
                "bbox",
            ),
            (
                "fn,bbox,true_bbox,iou\na.jpg,1 2 3 4,1 2 3 4,high\n",
                "line 2",
                "iou",
            ),
            ("fn,box,true_bbox,iou\n", "line 1", "header"),
        ];
        for (text, line, word) in cases {
            let path = write(dir.path(), "bad.csv", text);
            let message = read_bbox_predictions(&path).unwrap_err().to_string();
            assert!(
                message.contains("bad.csv") && message.contains(line) && message.contains(word),
                "{message}"
            );
        }
        let missing = read_class_predictions(&dir.path().join("nope.csv"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("nope.csv"), "{missing}");
    }

    #[test]
    fn reads_combined_predictions_and_names_file_and_line_of_bad_rows() {
        let dir = tempfile::tempdir().unwrap();
        let header = "fn,cat,true_cat,prob,bbox,true_bbox,iou\n";
        let path = write(
            dir.path(),
            "combined.csv",
            &format!(
                "{header}000012.jpg,car,horse,0.731200,96 155 269 350,90 150 270 349.5,0.8100\n"
            ),
        );
        assert_eq!(
            read_combined_predictions(&path).unwrap(),
            vec![CombinedPrediction {
                file_name: "000012.jpg".into(),
                category: "car".into(),
                true_category: "horse".into(),
                prob: 0.7312,
                bbox: [96.0, 155.0, 269.0, 350.0],
                true_bbox: [90.0, 150.0, 270.0, 349.5],
                iou: 0.81
            }]
        );
        let good = "a.jpg,car,car,0.9,1 2 3 4,1 2 3 4,1\n";
        let cases = [
            (
                format!("{header}{good}b.jpg,car,car,0.9,1 2 3 4,1 2 3,1\n"),
                "line 3",
                "true_bbox",
            ),
            (
                format!("{header}{good}b.jpg,car,car,sure,1 2 3 4,1 2 3 4,1\n"),
                "line 3",
                "prob",
            ),
            (
                format!("{header}../b.jpg,car,car,0.9,1 2 3 4,1 2 3 4,1\n"),
                "line 2",
                "..",
            ),
            (
                format!("{header}{good}b.jpg,car,car,0.9,1 2 3 4\n"),
                "line 3",
                "UnequalLengths",
            ),
            (
                "fn,cat,true_cat,prob,bbox,true_bbox\n".to_string(),
                "line 1",
                "header",
            ),
        ];
        for (text, line, word) in cases {
            let path = write(dir.path(), "bad.csv", &text);
            let message = read_combined_predictions(&path).unwrap_err().to_string();
            assert!(
                message.contains("bad.csv") && message.contains(line) && message.contains(word),
                "{message}"
            );
        }
    }

    #[test]
    fn reads_metrics_with_metric_columns_and_empty_cells() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "m.csv",
            "epoch,trn_loss,val_loss,l1_px,mean_iou,seconds\n1,2.5,2.0,30.1,0.4,12\n2,1.5,,25.0,0.5,11\n",
        );
        let table = read_metrics(&path).unwrap();
        assert_eq!(table.metric_columns(), vec!["l1_px", "mean_iou"]);
        assert_eq!(table.column("trn_loss").unwrap(), vec![2.5, 1.5]);
        assert!(table.column("val_loss").unwrap()[1].is_nan());
    }

    #[test]
    fn reads_lr_find_and_suggestion() {
        let dir = tempfile::tempdir().unwrap();
        let csv = write(
            dir.path(),
            "lr.csv",
            "iteration,lr,loss,smooth_loss\n0,1e-5,3.0,3.0\n1,2e-5,2.9,2.95\n",
        );
        let json = write(
            dir.path(),
            "lr.json",
            r#"{"suggested_lr": 0.001, "min_loss_lr": 0.01}"#,
        );
        let points = read_lr_find(&csv).unwrap();
        assert_eq!(
            points[1],
            LrFindPoint {
                iteration: 1,
                lr: 2e-5,
                loss: 2.9,
                smooth_loss: 2.95
            }
        );
        assert_eq!(
            read_lr_suggestion(&json).unwrap(),
            LrSuggestion {
                suggested_lr: 0.001,
                min_loss_lr: 0.01
            }
        );
        let bad = write(
            dir.path(),
            "bad.csv",
            "iteration,lr,loss,smooth_loss\n0,0,3.0,3.0\n",
        );
        let message = read_lr_find(&bad).unwrap_err().to_string();
        assert!(message.contains("bad.csv: line 2"), "{message}");
    }
}
