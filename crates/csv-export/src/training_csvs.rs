//! The CSVs the training stages write (the trainer) and `show`, the grids and
//! the report read (viz): their row types, headers and writers in one place,
//! so a column cannot be renamed on one side only.
//!
//! * validation predictions, one row per image: `fn,cat,true_cat,prob`
//!   (classifier), `fn,bbox,true_bbox,iou` (box regressor, boxes in original
//!   pixels) or both (combined);
//! * the lr_find curve, `iteration,lr,loss,smooth_loss`;
//! * the per-epoch metrics, `epoch,trn_loss,val_loss,<task metrics>,seconds`.

use std::io;
use std::path::Path;

use crate::{format_bbox, write_atomic, write_record};

pub const CLASS_PREDICTIONS_HEADER: [&str; 4] = ["fn", "cat", "true_cat", "prob"];
pub const BBOX_PREDICTIONS_HEADER: [&str; 4] = ["fn", "bbox", "true_bbox", "iou"];
pub const COMBINED_PREDICTIONS_HEADER: [&str; 7] =
    ["fn", "cat", "true_cat", "prob", "bbox", "true_bbox", "iou"];
pub const LR_FIND_HEADER: [&str; 4] = ["iteration", "lr", "loss", "smooth_loss"];
/// A metrics CSV's first columns; the task's metrics and `seconds` follow.
pub const METRICS_LEADING_COLUMNS: [&str; 3] = ["epoch", "trn_loss", "val_loss"];
/// A metrics CSV's last column: the epoch's wall time.
pub const METRICS_SECONDS_COLUMN: &str = "seconds";

/// One row of a bbox predictions CSV, boxes in original image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct BboxPrediction {
    pub file_name: String,
    pub bbox: [f32; 4],
    pub true_bbox: [f32; 4],
    pub iou: f32,
}

/// One row of a class predictions CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassPrediction {
    pub file_name: String,
    pub category: String,
    pub true_category: String,
    /// The probability of the predicted class.
    pub prob: f32,
}

/// One row of a combined (class and box) predictions CSV, boxes in original
/// image pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct CombinedPrediction {
    pub file_name: String,
    pub category: String,
    pub true_category: String,
    /// The probability of the predicted class.
    pub prob: f32,
    pub bbox: [f32; 4],
    pub true_bbox: [f32; 4],
    pub iou: f32,
}

/// A predict stage's validation predictions: one type per task.
#[derive(Debug, Clone, PartialEq)]
pub enum ValidationPredictions {
    Classes(Vec<ClassPrediction>),
    Boxes(Vec<BboxPrediction>),
    Combined(Vec<CombinedPrediction>),
}

impl ValidationPredictions {
    /// Writes the CSV atomically (probabilities to 6 decimals, IoUs to 4).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_atomic(path, |out| match self {
            ValidationPredictions::Classes(rows) => {
                write_record(out, &CLASS_PREDICTIONS_HEADER)?;
                for r in rows {
                    let prob = format!("{:.6}", r.prob);
                    write_record(out, &[&r.file_name, &r.category, &r.true_category, &prob])?;
                }
                Ok(())
            }
            ValidationPredictions::Boxes(rows) => {
                write_record(out, &BBOX_PREDICTIONS_HEADER)?;
                for r in rows {
                    let (bbox, truth) = (format_bbox(&r.bbox), format_bbox(&r.true_bbox));
                    let iou = format!("{:.4}", r.iou);
                    write_record(out, &[&r.file_name, &bbox, &truth, &iou])?;
                }
                Ok(())
            }
            ValidationPredictions::Combined(rows) => {
                write_record(out, &COMBINED_PREDICTIONS_HEADER)?;
                for r in rows {
                    let prob = format!("{:.6}", r.prob);
                    let (bbox, truth) = (format_bbox(&r.bbox), format_bbox(&r.true_bbox));
                    let iou = format!("{:.4}", r.iou);
                    let (cat, true_cat) = (&r.category, &r.true_category);
                    write_record(
                        out,
                        &[&r.file_name, cat, true_cat, &prob, &bbox, &truth, &iou],
                    )?;
                }
                Ok(())
            }
        })
    }
}

/// One lr_find step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrFindPoint {
    pub iteration: u64,
    pub lr: f64,
    pub loss: f64,
    pub smooth_loss: f64,
}

/// Writes the lr_find curve atomically.
pub fn write_lr_find(path: &Path, points: &[LrFindPoint]) -> io::Result<()> {
    write_atomic(path, |out| {
        write_record(out, &LR_FIND_HEADER)?;
        for p in points {
            let fields = [
                p.iteration.to_string(),
                p.lr.to_string(),
                p.loss.to_string(),
                p.smooth_loss.to_string(),
            ];
            write_record(out, &fields.each_ref().map(String::as_str))?;
        }
        Ok(())
    })
}

/// One epoch of a metrics CSV.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochMetrics {
    pub epoch: usize,
    pub trn_loss: f64,
    pub val_loss: f64,
    /// In the order of the header's metric names.
    pub metrics: Vec<f64>,
    pub seconds: f64,
}

/// Writes a metrics CSV atomically: the leading columns, `metric_names`, then
/// `seconds` (to the millisecond); the figures at full precision.
pub fn write_metrics(
    path: &Path,
    metric_names: &[&str],
    epochs: &[EpochMetrics],
) -> io::Result<()> {
    write_atomic(path, |out| {
        let mut header = METRICS_LEADING_COLUMNS.to_vec();
        header.extend(metric_names);
        header.push(METRICS_SECONDS_COLUMN);
        write_record(out, &header)?;
        for e in epochs {
            let mut fields = vec![
                e.epoch.to_string(),
                e.trn_loss.to_string(),
                e.val_loss.to_string(),
            ];
            fields.extend(e.metrics.iter().map(|v| v.to_string()));
            fields.push(format!("{:.3}", e.seconds));
            let fields: Vec<&str> = fields.iter().map(String::as_str).collect();
            write_record(out, &fields)?;
        }
        Ok(())
    })
}

/// The lr_find JSON beside the curve: `{"min_loss_lr": .., "suggested_lr": ..}`
/// (in that order, as the files written before this type were).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LrSuggestion {
    pub min_loss_lr: f64,
    pub suggested_lr: f64,
}

impl LrSuggestion {
    /// Writes the JSON atomically (pretty-printed).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        write_atomic(path, |out| {
            out.write_all(serde_json::to_string_pretty(self)?.as_bytes())
        })
    }
}
