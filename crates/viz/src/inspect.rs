//! What `cargo xtask show` prints and draws: artifacts are recognised by
//! their CSV header (or JSON keys), summarised as text, and drawn as a grid
//! or a plot.

use crate::artifacts::{
    read_bbox_predictions, read_class_predictions, read_combined_predictions, read_header,
    read_lr_find, read_lr_suggestion, read_metrics, read_string_table, BboxPrediction,
    ClassPrediction, CombinedPrediction, LrSuggestion, StringTable,
};
use crate::draw::{draw_annotations, Annotation, PREDICTION_COLOR};
use crate::grid::{
    bb_tiles, bbox_prediction_tiles, class_prediction_tiles, combined_prediction_tiles,
    lrg_bb_tiles, lrg_tiles, object_tiles, render_grid, render_grid_titled, GridLayout, ObjectsRow,
};
use crate::images::{unreadable_image, ImageOpener, OnBadImage};
use crate::order::{worst_first, RowOrder, WorstFirst};
use crate::plot::{plot_lr_find_points, plot_metrics_table, LrFindPlotOptions};
use crate::{save_png, Result, VizError};
use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArtifactKind {
    /// lrg.csv: `fn,cat`
    Lrg,
    /// bb.csv: `fn,bbox`
    Bb,
    /// lrg_bb.csv: `fn,cat,bbox`
    LrgBb,
    /// `fn,bbox,true_bbox,iou`
    BboxPredictions,
    /// `fn,cat,true_cat,prob`
    ClassPredictions,
    /// `fn,cat,true_cat,prob,bbox,true_bbox,iou` (the combined model's)
    CombinedPredictions,
    /// `epoch,trn_loss,val_loss,...`
    Metrics,
    /// `iteration,lr,loss,smooth_loss`
    LrFind,
    /// `{"suggested_lr": .., "min_loss_lr": ..}`
    LrFindJson,
    /// COCO-style annotations (`images`, `annotations`, `categories`)
    CocoJson,
    /// mbb.csv (or mbb_difficult.csv): `fn,bbox` with every box of an image; told
    /// from bb.csv by its name, which starts with `mbb`
    Mbb,
    /// A detector's predictions: `fn,cat,score,bbox`, one row per detection
    Detections,
    /// The evaluate stage's per-class AP table, its mean last
    ApTable,
}

/// Rows shown under "first rows".
pub const FIRST_ROWS: usize = 5;

pub fn detect_kind(path: &Path) -> Result<ArtifactKind> {
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"))
    {
        let text = std::fs::read_to_string(path).map_err(|e| VizError::io(path, e))?;
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| VizError::Parse {
                path: path.to_path_buf(),
                line: e.line() as u64,
                message: e.to_string(),
            })?;
        return if value.get("suggested_lr").is_some() {
            Ok(ArtifactKind::LrFindJson)
        } else if value.get("images").is_some() && value.get("annotations").is_some() {
            Ok(ArtifactKind::CocoJson)
        } else {
            Err(VizError::invalid(
                path,
                "JSON is neither an lr_find result nor COCO-style annotations",
            ))
        };
    }
    let header = read_header(path)?;
    let names: Vec<&str> = header.iter().map(String::as_str).collect();
    // Each kind by the header its writer writes (a metrics CSV by its leading
    // columns: the task's metrics follow).
    let by_header: [(&[&str], ArtifactKind); 10] = [
        (&csv_export::LRG_HEADER, ArtifactKind::Lrg),
        (&csv_export::BB_HEADER, ArtifactKind::Bb),
        (
            &multibox::detections::DETECTIONS_HEADER,
            ArtifactKind::Detections,
        ),
        (&multibox::map::AP_TABLE_HEADER, ArtifactKind::ApTable),
        (&csv_export::LRG_BB_HEADER, ArtifactKind::LrgBb),
        (
            &csv_export::BBOX_PREDICTIONS_HEADER,
            ArtifactKind::BboxPredictions,
        ),
        (
            &csv_export::CLASS_PREDICTIONS_HEADER,
            ArtifactKind::ClassPredictions,
        ),
        (
            &csv_export::COMBINED_PREDICTIONS_HEADER,
            ArtifactKind::CombinedPredictions,
        ),
        (&csv_export::LR_FIND_HEADER, ArtifactKind::LrFind),
        (&csv_export::METRICS_LEADING_COLUMNS, ArtifactKind::Metrics),
    ];
    let found = by_header.iter().find(|(columns, kind)| match kind {
        ArtifactKind::Metrics => names.starts_with(columns),
        _ => names == *columns,
    });
    match found {
        // mbb.csv shares bb.csv's header; its name tells them apart.
        Some((_, ArtifactKind::Bb)) if is_mbb(path) => Ok(ArtifactKind::Mbb),
        Some(&(_, kind)) => Ok(kind),
        None => Err(VizError::Parse {
            path: path.to_path_buf(),
            line: 1,
            message: format!(
                "unknown artifact header `{}` (expected lrg, bb, lrg_bb, metrics, lr_find or predictions CSV)",
                header.join(",")
            ),
        }),
    }
}

/// Whether a `fn,bbox` CSV holds every object per image: `mbb*.csv`.
fn is_mbb(path: &Path) -> bool {
    path.file_stem()
        .is_some_and(|stem| stem.to_string_lossy().starts_with("mbb"))
}

/// The per-box classes beside a multi-box CSV (`mbb.csv` -> `mbb_classes.csv`).
fn box_classes_beside(csv: &Path) -> Option<PathBuf> {
    let stem = csv.file_stem()?.to_string_lossy();
    Some(csv.with_file_name(format!("{stem}_classes.csv"))).filter(|p| p.is_file())
}

/// The scored images beside a detections CSV (`ssd.csv` -> `ssd_images.csv`).
pub fn scored_images_beside(csv: &Path) -> Option<PathBuf> {
    let stem = csv.file_stem()?.to_string_lossy();
    Some(csv.with_file_name(format!("{stem}_images.csv"))).filter(|p| p.is_file())
}

/// `(min, mean, max)` of the finite values, `None` if there are none.
pub fn min_mean_max(values: impl IntoIterator<Item = f64>) -> Option<(f64, f64, f64)> {
    let (mut min, mut max, mut sum, mut count) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
    for v in values.into_iter().filter(|v| v.is_finite()) {
        min = min.min(v);
        max = max.max(v);
        sum += v;
        count += 1;
    }
    (count > 0).then(|| (min, sum / count as f64, max))
}

/// Human-readable summary of any artifact `show` knows.
pub fn summarize(path: &Path) -> Result<String> {
    let kind = detect_kind(path)?;
    let mut out = String::new();
    let _ = writeln!(out, "{} ({})", path.display(), kind_name(kind));
    // Every CSV shows its size and first rows, then what its kind says.
    let table_summary: TableSummary = match kind {
        ArtifactKind::LrFindJson => {
            let s = read_lr_suggestion(path)?;
            let _ = writeln!(
                out,
                "suggested lr {:.3e}, min loss lr {:.3e}",
                s.suggested_lr, s.min_loss_lr
            );
            return Ok(out);
        }
        ArtifactKind::CocoJson => {
            summarize_dataset(&mut out, path)?;
            return Ok(out);
        }
        ArtifactKind::Lrg => lrg_summary,
        ArtifactKind::Bb => bb_summary,
        ArtifactKind::Mbb => mbb_summary,
        ArtifactKind::Detections => detections_summary,
        ArtifactKind::LrgBb => lrg_bb_summary,
        ArtifactKind::BboxPredictions => bbox_predictions_summary,
        ArtifactKind::ClassPredictions => class_predictions_summary,
        ArtifactKind::CombinedPredictions => combined_predictions_summary,
        ArtifactKind::Metrics => metrics_summary,
        ArtifactKind::LrFind => lr_find_summary,
        ArtifactKind::ApTable => ap_table_summary,
    };
    let table = read_string_table(path)?;
    let _ = writeln!(out, "rows: {}", table.rows.len());
    let shown: Vec<Vec<String>> = table.rows.iter().take(FIRST_ROWS).cloned().collect();
    let _ = writeln!(out, "first rows:\n{}", aligned(&table.header, &shown));
    table_summary(&mut out, path, &table)?;
    Ok(out)
}

/// What one kind of CSV adds to its summary, from the file (typed) or the
/// table already read.
type TableSummary = fn(&mut String, &Path, &StringTable) -> Result<()>;

fn lrg_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = csv_export::read_lrg(path)?;
    class_counts(out, rows.iter().map(|r| r.category.as_str()));
    Ok(())
}

fn bb_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = csv_export::read_bb(path)?;
    box_sizes(out, rows.iter().map(|r| r.bbox));
    Ok(())
}

fn mbb_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = multibox::annotations::read_mbb(path)?;
    let boxes: usize = rows.iter().map(|r| r.boxes.len()).sum();
    let _ = writeln!(
        out,
        "{boxes} boxes, {:.2} per image",
        boxes as f64 / rows.len().max(1) as f64
    );
    box_sizes(out, rows.iter().flat_map(|r| r.boxes.iter().copied()));
    Ok(())
}

fn detections_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = multibox::detections::read_detections(path)?;
    class_counts(out, rows.iter().map(|r| r.class.as_str()));
    if let Some((min, mean, max)) = min_mean_max(rows.iter().map(|r| r.score as f64)) {
        let _ = writeln!(out, "scores: min {min:.3}, mean {mean:.3}, max {max:.3}");
    }
    Ok(())
}

fn lrg_bb_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = csv_export::read_lrg_bb(path)?;
    class_counts(out, rows.iter().map(|r| r.category.as_str()));
    box_sizes(out, rows.iter().map(|r| r.bbox));
    Ok(())
}

fn bbox_predictions_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = read_bbox_predictions(path)?;
    box_outcomes(out, &rows.iter().map(BoxOutcome::from).collect::<Vec<_>>());
    Ok(())
}

fn class_predictions_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = read_class_predictions(path)?;
    class_outcomes(
        out,
        &rows.iter().map(ClassOutcome::from).collect::<Vec<_>>(),
    );
    Ok(())
}

fn combined_predictions_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let rows = read_combined_predictions(path)?;
    class_outcomes(
        out,
        &rows.iter().map(ClassOutcome::from).collect::<Vec<_>>(),
    );
    box_outcomes(out, &rows.iter().map(BoxOutcome::from).collect::<Vec<_>>());
    let both = rows
        .iter()
        .filter(|r| r.category == r.true_category && r.iou >= 0.5)
        .count();
    let _ = writeln!(
        out,
        "right class and IoU >= 0.5: {both} of {} ({:.1}%)",
        rows.len(),
        percent(both, rows.len())
    );
    Ok(())
}

fn metrics_summary(out: &mut String, path: &Path, table: &StringTable) -> Result<()> {
    let metrics = read_metrics(path)?;
    if table.rows.len() > FIRST_ROWS {
        let _ = writeln!(out, "all epochs:\n{}", aligned(&table.header, &table.rows));
    }
    let epochs = metrics.column("epoch").unwrap_or_default();
    let val = metrics.column("val_loss").unwrap_or_default();
    if let Some((index, loss)) = val
        .iter()
        .enumerate()
        .filter(|(_, v)| v.is_finite())
        .min_by(|a, b| a.1.total_cmp(b.1))
    {
        let _ = writeln!(out, "best val_loss {loss:.4} at epoch {}", epochs[index]);
    }
    if let Some(seconds) = metrics.column(csv_export::METRICS_SECONDS_COLUMN) {
        let _ = writeln!(
            out,
            "total training time: {:.1} s",
            seconds.iter().filter(|s| s.is_finite()).sum::<f64>()
        );
    }
    let _ = writeln!(
        out,
        "metric columns: {}",
        metrics.metric_columns().join(", ")
    );
    Ok(())
}

fn lr_find_summary(out: &mut String, path: &Path, _: &StringTable) -> Result<()> {
    let points = read_lr_find(path)?;
    if let (Some(first), Some(last)) = (points.first(), points.last()) {
        let _ = writeln!(out, "lr from {:.2e} to {:.2e}", first.lr, last.lr);
    }
    if let Some(best) = points
        .iter()
        .filter(|p| p.smooth_loss.is_finite())
        .min_by(|a, b| a.smooth_loss.total_cmp(&b.smooth_loss))
    {
        let _ = writeln!(
            out,
            "lowest smoothed loss {:.4} at lr {:.2e}",
            best.smooth_loss, best.lr
        );
    }
    match lr_find_json_beside(path) {
        Some(json) => {
            let s = read_lr_suggestion(&json)?;
            let _ = writeln!(
                out,
                "{}: suggested lr {:.3e}, min loss lr {:.3e}",
                json.display(),
                s.suggested_lr,
                s.min_loss_lr
            );
        }
        None => {
            let _ = writeln!(
                out,
                "no lr_find JSON beside it ({})",
                path.with_extension("json").display()
            );
        }
    }
    Ok(())
}

fn ap_table_summary(out: &mut String, _: &Path, table: &StringTable) -> Result<()> {
    if let Some(mean) = table
        .rows
        .iter()
        .find(|r| r.first().is_some_and(|c| c == "mean"))
    {
        let _ = writeln!(
            out,
            "mAP {} (11-point), {} (all points) over {} objects",
            mean.get(5).map_or("?", String::as_str),
            mean.get(6).map_or("?", String::as_str),
            mean.get(1).map_or("?", String::as_str)
        );
    }
    Ok(())
}

fn kind_name(kind: ArtifactKind) -> &'static str {
    match kind {
        ArtifactKind::Lrg => "largest-object classes, lrg.csv",
        ArtifactKind::Bb => "largest-object boxes, bb.csv",
        ArtifactKind::LrgBb => "largest-object classes and boxes, lrg_bb.csv",
        ArtifactKind::BboxPredictions => "bbox predictions",
        ArtifactKind::ClassPredictions => "class predictions",
        ArtifactKind::CombinedPredictions => "class and bbox predictions",
        ArtifactKind::Metrics => "training metrics per epoch",
        ArtifactKind::LrFind => "lr_find curve",
        ArtifactKind::LrFindJson => "lr_find result",
        ArtifactKind::CocoJson => "COCO-style annotations",
        ArtifactKind::Mbb => "every object's box, mbb.csv",
        ArtifactKind::Detections => "a detector's detections",
        ArtifactKind::ApTable => "VOC AP per class (the evaluate stage's)",
    }
}

/// A class prediction as the summaries see it, whichever CSV it came from.
struct ClassOutcome<'a> {
    file_name: &'a str,
    predicted: &'a str,
    truth: &'a str,
    prob: f32,
}

impl<'a> From<&'a ClassPrediction> for ClassOutcome<'a> {
    fn from(p: &'a ClassPrediction) -> Self {
        ClassOutcome {
            file_name: &p.file_name,
            predicted: &p.category,
            truth: &p.true_category,
            prob: p.prob,
        }
    }
}

impl<'a> From<&'a CombinedPrediction> for ClassOutcome<'a> {
    fn from(p: &'a CombinedPrediction) -> Self {
        ClassOutcome {
            file_name: &p.file_name,
            predicted: &p.category,
            truth: &p.true_category,
            prob: p.prob,
        }
    }
}

/// A box prediction as the summaries see it, whichever CSV it came from.
struct BoxOutcome<'a> {
    file_name: &'a str,
    bbox: [f32; 4],
    true_bbox: [f32; 4],
    iou: f32,
}

impl<'a> From<&'a BboxPrediction> for BoxOutcome<'a> {
    fn from(p: &'a BboxPrediction) -> Self {
        BoxOutcome {
            file_name: &p.file_name,
            bbox: p.bbox,
            true_bbox: p.true_bbox,
            iou: p.iou,
        }
    }
}

impl<'a> From<&'a CombinedPrediction> for BoxOutcome<'a> {
    fn from(p: &'a CombinedPrediction) -> Self {
        BoxOutcome {
            file_name: &p.file_name,
            bbox: p.bbox,
            true_bbox: p.true_bbox,
            iou: p.iou,
        }
    }
}

/// The number of classes and a histogram of them.
fn class_counts<'a>(out: &mut String, categories: impl Iterator<Item = &'a str>) {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut total = 0;
    for category in categories {
        *counts.entry(category.to_string()).or_default() += 1;
        total += 1;
    }
    let _ = writeln!(out, "classes: {}", counts.len());
    histogram(out, counts, total);
}

/// Min, mean and max of the boxes' widths, heights and areas.
fn box_sizes(out: &mut String, boxes: impl Iterator<Item = [f32; 4]>) {
    let sizes: Vec<(f64, f64)> = boxes
        .map(|[top, left, bottom, right]| (f64::from(right - left), f64::from(bottom - top)))
        .collect();
    let _ = writeln!(
        out,
        "box sizes in pixels (width = right-left, height = bottom-top):"
    );
    let _ = writeln!(out, "{:>8} {:>10} {:>10} {:>10}", "", "min", "mean", "max");
    let stats = [
        ("width", min_mean_max(sizes.iter().map(|s| s.0))),
        ("height", min_mean_max(sizes.iter().map(|s| s.1))),
        ("area", min_mean_max(sizes.iter().map(|s| s.0 * s.1))),
    ];
    for (name, stat) in stats {
        if let Some((min, mean, max)) = stat {
            let _ = writeln!(out, "{name:>8} {min:>10.1} {mean:>10.1} {max:>10.1}");
        }
    }
}

/// IoU statistics, the share with IoU >= 0.5, the mean L1 error and the lowest IoUs.
fn box_outcomes(out: &mut String, rows: &[BoxOutcome]) {
    if let Some((min, mean, max)) = min_mean_max(rows.iter().map(|r| f64::from(r.iou))) {
        let _ = writeln!(out, "IoU: min {min:.3}, mean {mean:.3}, max {max:.3}");
    }
    let hits = rows.iter().filter(|r| r.iou >= 0.5).count();
    let _ = writeln!(
        out,
        "IoU >= 0.5: {hits} of {} ({:.1}%)",
        rows.len(),
        percent(hits, rows.len())
    );
    let l1 = rows.iter().map(|r| {
        r.bbox
            .iter()
            .zip(&r.true_bbox)
            .map(|(p, t)| f64::from((p - t).abs()))
            .sum::<f64>()
            / 4.0
    });
    if let Some((_, mean, _)) = min_mean_max(l1) {
        let _ = writeln!(out, "mean L1 error per coordinate: {mean:.1} px");
    }
    let mut worst: Vec<_> = rows.iter().collect();
    worst.sort_by(|a, b| a.iou.total_cmp(&b.iou));
    let names: Vec<String> = worst
        .iter()
        .take(3)
        .map(|r| format!("{} ({:.2})", r.file_name, r.iou))
        .collect();
    let _ = writeln!(out, "lowest IoU: {}", names.join(", "));
}

/// Accuracy, mean probability, per-class accuracy, the commonest confusions
/// and the most confident mistakes.
fn class_outcomes(out: &mut String, rows: &[ClassOutcome]) {
    let right = rows.iter().filter(|r| r.predicted == r.truth).count();
    let _ = writeln!(
        out,
        "accuracy: {right} of {} ({:.1}%)",
        rows.len(),
        percent(right, rows.len())
    );
    if let Some((_, mean, _)) = min_mean_max(rows.iter().map(|r| f64::from(r.prob))) {
        let _ = writeln!(out, "mean predicted probability: {mean:.3}");
    }
    let mut per_class: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut confusions: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for row in rows {
        let entry = per_class.entry(row.truth).or_default();
        entry.0 += 1;
        if row.predicted == row.truth {
            entry.1 += 1;
        } else {
            *confusions.entry((row.truth, row.predicted)).or_default() += 1;
        }
    }
    let _ = writeln!(out, "per true class (count, accuracy):");
    let mut classes: Vec<_> = per_class.into_iter().collect();
    classes.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(b.0)));
    for (class, (count, right)) in classes {
        let _ = writeln!(
            out,
            "  {class:<14} {count:>5} {:>6.1}%",
            percent(right, count)
        );
    }
    let mut confusions: Vec<_> = confusions.into_iter().collect();
    confusions.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    if !confusions.is_empty() {
        let top: Vec<String> = confusions
            .iter()
            .take(5)
            .map(|((t, p), n)| format!("{t} -> {p} ({n})"))
            .collect();
        let _ = writeln!(
            out,
            "most common mistakes (true -> predicted): {}",
            top.join(", ")
        );
        // The worst order's first rows: what `order = "worst"` draws first.
        let mut mistakes: Vec<_> = rows.iter().filter(|r| r.predicted != r.truth).collect();
        mistakes.sort_by(|a, b| b.prob.total_cmp(&a.prob));
        let named: Vec<String> = mistakes
            .iter()
            .filter(|r| !r.prob.is_nan())
            .take(3)
            .map(|r| {
                format!(
                    "{} ({} {:.2}, true {})",
                    r.file_name, r.predicted, r.prob, r.truth
                )
            })
            .collect();
        if !named.is_empty() {
            let _ = writeln!(out, "most confident mistakes: {}", named.join(", "));
        }
    }
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

fn summarize_dataset(out: &mut String, path: &Path) -> Result<()> {
    let dataset = voc_annotations::load_coco_json(path)?;
    let _ = writeln!(
        out,
        "images: {}, usable objects: {} ({} ignored dropped, {} clamped), categories: {}",
        dataset.images.len(),
        dataset.object_count(),
        dataset.stats.ignored,
        dataset.stats.clamped,
        dataset.categories.len()
    );
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for object in dataset.images.iter().flat_map(|i| &i.objects) {
        let name = dataset
            .category_name(object.category_id)
            .unwrap_or("?")
            .to_string();
        *counts.entry(name).or_default() += 1;
    }
    histogram(out, counts, dataset.object_count());
    Ok(())
}

/// Class counts, most frequent first, with a bar.
fn histogram(out: &mut String, counts: BTreeMap<String, usize>, total: usize) {
    let mut counts: Vec<_> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let most = counts.first().map_or(1, |c| c.1.max(1));
    for (name, count) in counts {
        let bar = "#".repeat((count * 40).div_ceil(most));
        let _ = writeln!(
            out,
            "  {name:<14} {count:>6} {:>5.1}% {bar}",
            percent(count, total)
        );
    }
}

/// Columns padded to their widest cell.
fn aligned(header: &[String], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("  {}", padded.join("  ").trim_end())
    };
    let mut lines = vec![line(header)];
    lines.extend(rows.iter().map(|r| line(r)));
    lines.join("\n")
}

/// `x.json` beside `x.csv`, the lr_find JSON's usual place.
fn lr_find_json_beside(csv: &Path) -> Option<PathBuf> {
    Some(csv.with_extension("json")).filter(|p| p.is_file())
}

/// What `--draw N` made.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawn {
    pub path: PathBuf,
    /// One line for the caller to print: which rows (`first 12 rows`, or
    /// `worst 12 of 500 rows by ...`) in what grid; it ends with the unreadable
    /// images' count and names where there are any.
    pub what: String,
    /// Images that could not be read, drawn as marked tiles, with why.
    pub unreadable: Vec<(PathBuf, String)>,
    /// The `fn` of each row drawn, in grid order (row by row); empty for plots.
    pub file_names: Vec<String>,
}

/// How [`draw_artifact_with_options`] draws a CSV.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DrawOptions {
    /// How many rows to draw (the grid has at most 4 columns).
    pub rows: usize,
    /// The CSV's first rows, or (prediction CSVs only) the worst predictions.
    pub order: RowOrder,
    pub on_bad_image: OnBadImage,
    /// Detections only: those scoring below this are not drawn.
    pub min_score: f32,
}

impl DrawOptions {
    /// The first `rows` rows, unreadable images drawn as marked tiles.
    pub fn first(rows: usize) -> Self {
        DrawOptions {
            rows,
            order: RowOrder::First,
            on_bad_image: OnBadImage::default(),
            min_score: 0.25,
        }
    }
}

/// [`draw_artifact_with`] under the default policy, [`OnBadImage::Skip`]:
/// an unreadable image is warned about, drawn as a marked tile and listed in
/// [`Drawn::unreadable`].
pub fn draw_artifact(path: &Path, count: usize, images_dir: &Path, out: &Path) -> Result<Drawn> {
    draw_artifact_with(path, count, images_dir, out, OnBadImage::default())
}

/// Draws the first `count` rows of a bb/lrg/lrg_bb/predictions CSV on their
/// images (a grid of at most 4 columns), or plots a metrics or lr_find CSV. An
/// image that cannot be read is handled as `on_bad_image` says; a file name
/// leading out of `images_dir` is an error naming the CSV and the name.
pub fn draw_artifact_with(
    path: &Path,
    count: usize,
    images_dir: &Path,
    out: &Path,
    on_bad_image: OnBadImage,
) -> Result<Drawn> {
    let options = DrawOptions {
        on_bad_image,
        ..DrawOptions::first(count)
    };
    draw_artifact_with_options(path, images_dir, out, &options)
}

/// [`draw_artifact_with`] with a choice of rows: under [`RowOrder::Worst`] a
/// predictions CSV's rows are ranked worst first ([`crate::order`]) and the
/// picture gets a title saying so; on any other artifact that order is an
/// error naming the file.
pub fn draw_artifact_with_options(
    path: &Path,
    images_dir: &Path,
    out: &Path,
    options: &DrawOptions,
) -> Result<Drawn> {
    let kind = detect_kind(path)?;
    let criterion = worst_criterion(kind);
    if options.order == RowOrder::Worst && criterion.is_none() {
        return Err(VizError::invalid(
            path,
            format!(
                "order `worst` ranks predictions by how wrong they are, and this is {}, \
                 not a predictions CSV (fn,cat,true_cat,prob / fn,bbox,true_bbox,iou / both); \
                 use order `first`",
                kind_name(kind)
            ),
        ));
    }
    let mut images = ImageOpener::new(images_dir, path, options.on_bad_image);
    let count = options.rows;
    let (chosen, tiles) = match kind {
        ArtifactKind::Lrg => {
            let chosen = Chosen::first(csv_export::read_lrg(path)?, count, |r| &r.file_name);
            let tiles = lrg_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::Bb => {
            let chosen = Chosen::first(csv_export::read_bb(path)?, count, |r| &r.file_name);
            let tiles = bb_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::LrgBb => {
            let chosen = Chosen::first(csv_export::read_lrg_bb(path)?, count, |r| &r.file_name);
            let tiles = lrg_bb_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::Mbb => {
            let rows = match box_classes_beside(path) {
                Some(classes) => multibox::annotations::read_boxes(path, &classes)?
                    .into_iter()
                    .map(|i| ObjectsRow {
                        objects: i.boxes.into_iter().zip(i.classes).collect(),
                        caption: i.file_name.clone(),
                        file_name: i.file_name,
                    })
                    .collect(),
                None => multibox::annotations::read_mbb(path)?
                    .into_iter()
                    .map(|r| ObjectsRow {
                        objects: r.boxes.into_iter().map(|b| (b, String::new())).collect(),
                        caption: r.file_name.clone(),
                        file_name: r.file_name,
                    })
                    .collect(),
            };
            let chosen = Chosen::first(rows, count, |r| &r.file_name);
            let tiles = object_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::Detections => {
            let rows = detection_rows(path, options.min_score)?;
            let chosen = Chosen::first(rows, count, |r| &r.file_name);
            let tiles = object_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::BboxPredictions => {
            let chosen = Chosen::predictions(read_bbox_predictions(path)?, options);
            let tiles = bbox_prediction_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::ClassPredictions => {
            let chosen = Chosen::predictions(read_class_predictions(path)?, options);
            let tiles = class_prediction_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::CombinedPredictions => {
            let chosen = Chosen::predictions(read_combined_predictions(path)?, options);
            let tiles = combined_prediction_tiles(&chosen.rows, &mut images)?;
            (chosen.names(), tiles)
        }
        ArtifactKind::Metrics => {
            let table = read_metrics(path)?;
            if table.rows.is_empty() {
                return Err(VizError::invalid(path, "no epochs to plot"));
            }
            plot_metrics_table(&table, out)?;
            return Ok(Drawn {
                path: out.to_path_buf(),
                what: format!("losses and metrics over {} epochs", table.rows.len()),
                unreadable: Vec::new(),
                file_names: Vec::new(),
            });
        }
        ArtifactKind::LrFind => {
            let points = read_lr_find(path)?;
            if points.is_empty() {
                return Err(VizError::invalid(path, "no lr_find points to plot"));
            }
            let suggestion: Option<LrSuggestion> = lr_find_json_beside(path)
                .map(|json| read_lr_suggestion(&json))
                .transpose()?;
            plot_lr_find_points(
                &points,
                suggestion.as_ref(),
                out,
                &LrFindPlotOptions::default(),
            )?;
            return Ok(Drawn {
                path: out.to_path_buf(),
                what: format!("lr_find curve of {} points", points.len()),
                unreadable: Vec::new(),
                file_names: Vec::new(),
            });
        }
        ArtifactKind::LrFindJson | ArtifactKind::CocoJson => {
            return Err(VizError::invalid(
                path,
                "nothing to draw for this JSON; use show-image for one image of the dataset",
            ));
        }
        ArtifactKind::ApTable => {
            return Err(VizError::invalid(
                path,
                "the evaluate stage draws these APs as plots/pr_curves.png",
            ));
        }
    };
    if tiles.is_empty() {
        return Err(VizError::invalid(path, "no rows to draw"));
    }
    let layout = GridLayout::for_count(tiles.len(), 4);
    let (total_rows, file_names) = chosen;
    let worst_by = criterion.filter(|_| options.order == RowOrder::Worst);
    let which = match worst_by {
        Some(criterion) => format!("worst {} of {total_rows} rows by {criterion}", tiles.len()),
        None => format!("first {} rows", tiles.len()),
    };
    let picture = if worst_by.is_some() {
        render_grid_titled(&tiles, &layout, &which)
    } else {
        render_grid(&tiles, &layout)
    };
    save_png(&picture, out)?;
    let summary = images.into_summary();
    Ok(Drawn {
        path: out.to_path_buf(),
        what: format!(
            "{which} in a {}x{} grid{}",
            layout.rows,
            layout.cols,
            summary.note()
        ),
        unreadable: summary.unreadable,
        file_names,
    })
}

/// A detections CSV as one row per image, in the order of the scored images
/// beside it (images where nothing was found included) or else of first
/// appearance; only detections scoring at least `min_score`, labelled with
/// their class and score.
fn detection_rows(path: &Path, min_score: f32) -> Result<Vec<ObjectsRow>> {
    let detections = multibox::detections::read_detections(path)?;
    let mut order: Vec<String> = match scored_images_beside(path) {
        Some(list) => multibox::detections::read_image_list(&list)?,
        None => Vec::new(),
    };
    let mut by_image: BTreeMap<&str, Vec<([f32; 4], String)>> = BTreeMap::new();
    for d in &detections {
        if !by_image.contains_key(d.file_name.as_str()) && !order.contains(&d.file_name) {
            order.push(d.file_name.clone());
        }
        let objects = by_image.entry(d.file_name.as_str()).or_default();
        if d.score >= min_score {
            objects.push((d.bbox, format!("{} {:.2}", d.class, d.score)));
        }
    }
    Ok(order
        .into_iter()
        .map(|file_name| {
            let objects = by_image.remove(file_name.as_str()).unwrap_or_default();
            ObjectsRow {
                caption: format!("{file_name}  {} found", objects.len()),
                file_name,
                objects,
            }
        })
        .collect())
}

/// What the worst order ranks `kind`'s rows by; `None` for kinds it does not rank.
fn worst_criterion(kind: ArtifactKind) -> Option<&'static str> {
    match kind {
        ArtifactKind::BboxPredictions => Some(BboxPrediction::CRITERION),
        ArtifactKind::ClassPredictions => Some(ClassPrediction::CRITERION),
        ArtifactKind::CombinedPredictions => Some(CombinedPrediction::CRITERION),
        _ => None,
    }
}

/// The rows a grid draws, picked from a CSV's `total` rows.
struct Chosen<T> {
    total: usize,
    rows: Vec<T>,
    file_name: fn(&T) -> &String,
}

impl<T> Chosen<T> {
    /// The first `count` rows.
    fn first(rows: Vec<T>, count: usize, file_name: fn(&T) -> &String) -> Self {
        Chosen {
            total: rows.len(),
            rows: rows.into_iter().take(count).collect(),
            file_name,
        }
    }
    /// The CSV's row count and the chosen rows' file names, in order.
    fn names(&self) -> (usize, Vec<String>) {
        let names = self.rows.iter().map(|r| (self.file_name)(r).clone());
        (self.total, names.collect())
    }
}

impl<T: WorstFirst + HasFileName> Chosen<T> {
    /// The first `options.rows` predictions in the order `options` says.
    fn predictions(rows: Vec<T>, options: &DrawOptions) -> Self {
        let rows = match options.order {
            RowOrder::First => rows,
            RowOrder::Worst => worst_first(rows),
        };
        Chosen::first(rows, options.rows, T::file_name)
    }
}

/// The `fn` column of a predictions row.
trait HasFileName {
    fn file_name(&self) -> &String;
}

impl HasFileName for BboxPrediction {
    fn file_name(&self) -> &String {
        &self.file_name
    }
}

impl HasFileName for ClassPrediction {
    fn file_name(&self) -> &String {
        &self.file_name
    }
}

impl HasFileName for CombinedPrediction {
    fn file_name(&self) -> &String {
        &self.file_name
    }
}

/// Every object of image `id` as a labelled box (the lesson's `draw_idx`).
pub fn image_annotations(
    dataset: &voc_annotations::Dataset,
    id: u64,
) -> Option<(&voc_annotations::ImageInfo, Vec<Annotation>)> {
    let image = dataset.images.iter().find(|i| i.id == id)?;
    let annotations = image
        .objects
        .iter()
        .map(|o| {
            let name = dataset.category_name(o.category_id).unwrap_or("?");
            Annotation::labelled_box(o.bbox, name, PREDICTION_COLOR)
        })
        .collect();
    Some((image, annotations))
}

/// Draws every box and class name of image `id` from a COCO-style JSON on
/// the full-size image; returns the names drawn, in annotation order. An
/// unreadable image is an error naming it ([`OnBadImage::Fail`]); see
/// [`draw_dataset_image_with`] for the other policy.
pub fn draw_dataset_image(
    dataset_json: &Path,
    images_dir: &Path,
    id: u64,
    out: &Path,
) -> Result<Vec<String>> {
    draw_dataset_image_with(dataset_json, images_dir, id, out, OnBadImage::Fail).map(|d| d.names)
}

/// What [`draw_dataset_image_with`] drew.
#[derive(Debug, Clone, PartialEq)]
pub struct DrawnImage {
    /// The class names of the image's objects, in annotation order.
    pub names: Vec<String>,
    /// The image, with why, where it could not be read and a marked picture
    /// of its annotated size was drawn instead (no boxes on it).
    pub unreadable: Vec<(PathBuf, String)>,
}

/// [`draw_dataset_image`] with a policy for an unreadable image: under
/// [`OnBadImage::Skip`] it is warned about, listed in
/// [`DrawnImage::unreadable`], and `out` shows a crossed-out picture of the
/// image's annotated size saying why.
pub fn draw_dataset_image_with(
    dataset_json: &Path,
    images_dir: &Path,
    id: u64,
    out: &Path,
    on_bad_image: OnBadImage,
) -> Result<DrawnImage> {
    let dataset = voc_annotations::load_coco_json(dataset_json)?;
    let (info, annotations) = image_annotations(&dataset, id)
        .ok_or_else(|| VizError::invalid(dataset_json, format!("no image with id {id}")))?;
    let mut images = ImageOpener::new(images_dir, dataset_json, on_bad_image);
    match images.open(&info.file_name)? {
        Ok(mut image) => {
            // Text scaled to the image as the lesson's 16 pt on a ~500 px figure.
            let text_px = (image.width().max(image.height()) as f32 / 30.0).clamp(14.0, 48.0);
            draw_annotations(&mut image, &annotations, text_px);
            save_png(&image, out)?;
        }
        Err(reason) => save_png(&unreadable_image(info.width, info.height, &reason), out)?,
    }
    Ok(DrawnImage {
        names: annotations.into_iter().filter_map(|a| a.label).collect(),
        unreadable: images.into_summary().unreadable,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draw::{BLACK, GROUND_TRUTH_COLOR, WHITE};
    use crate::test_support::{png_size, write, write_jpeg};

    #[test]
    fn kinds_are_detected_from_headers() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("fn,cat\n", ArtifactKind::Lrg),
            ("fn,bbox\n", ArtifactKind::Bb),
            ("fn,bbox,true_bbox,iou\n", ArtifactKind::BboxPredictions),
            ("fn,cat,true_cat,prob\n", ArtifactKind::ClassPredictions),
            ("fn,cat,bbox\n", ArtifactKind::LrgBb),
            (
                "fn,cat,true_cat,prob,bbox,true_bbox,iou\n",
                ArtifactKind::CombinedPredictions,
            ),
            (
                "epoch,trn_loss,val_loss,accuracy,seconds\n",
                ArtifactKind::Metrics,
            ),
            ("iteration,lr,loss,smooth_loss\n", ArtifactKind::LrFind),
            ("fn,cat,score,bbox\n", ArtifactKind::Detections),
            (
                "class,objects,difficult,true_positives,false_positives,ap_11pt,ap_all\n",
                ArtifactKind::ApTable,
            ),
        ];
        for (header, kind) in cases {
            assert_eq!(
                detect_kind(&write(dir.path(), "a.csv", header)).unwrap(),
                kind,
                "{header}"
            );
        }
        assert_eq!(
            detect_kind(&write(
                dir.path(),
                "l.json",
                r#"{"suggested_lr":1e-3,"min_loss_lr":1e-2}"#
            ))
            .unwrap(),
            ArtifactKind::LrFindJson
        );
        let message = detect_kind(&write(dir.path(), "odd.csv", "x,y\n"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("odd.csv") && message.contains("x,y"),
            "{message}"
        );
    }

    #[test]
    fn lrg_summary_has_rows_and_class_histogram() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "lrg.csv",
            "fn,cat\na.jpg,car\nb.jpg,horse\nc.jpg,car\n",
        );
        let summary = summarize(&path).unwrap();
        assert!(summary.contains("rows: 3"), "{summary}");
        assert!(summary.contains("classes: 2"), "{summary}");
        let car = summary
            .lines()
            .find(|l| l.trim_start().starts_with("car "))
            .unwrap();
        assert!(car.contains(" 2 ") && car.contains("66.7%"), "{car}");
        // Most frequent class first.
        assert!(summary.find("  car").unwrap() < summary.find("  horse").unwrap());
    }

    #[test]
    fn bb_summary_has_box_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "bb.csv",
            "fn,bbox\na.jpg,0 0 10 20\nb.jpg,10 10 40 30\n",
        );
        let summary = summarize(&path).unwrap();
        // widths 20 and 20, heights 10 and 30, areas 200 and 600.
        for expected in [
            "   width       20.0       20.0       20.0",
            "  height       10.0       20.0       30.0",
            "    area      200.0      400.0      600.0",
        ] {
            assert!(
                summary.contains(expected),
                "missing `{expected}` in\n{summary}"
            );
        }
    }

    #[test]
    fn prediction_and_metrics_summaries() {
        let dir = tempfile::tempdir().unwrap();
        let bbox = write(
            dir.path(),
            "p.csv",
            "fn,bbox,true_bbox,iou\na.jpg,0 0 10 10,0 0 10 14,0.7\nb.jpg,0 0 10 10,4 4 14 14,0.2\n",
        );
        let summary = summarize(&bbox).unwrap();
        assert!(
            summary.contains("IoU: min 0.200, mean 0.450, max 0.700"),
            "{summary}"
        );
        assert!(summary.contains("IoU >= 0.5: 1 of 2 (50.0%)"), "{summary}");
        assert!(
            summary.contains("mean L1 error per coordinate: 2.5 px"),
            "{summary}"
        );
        let class = write(
            dir.path(),
            "c.csv",
            "fn,cat,true_cat,prob\na.jpg,car,car,0.9\nb.jpg,dog,cat,0.5\nc.jpg,dog,cat,0.4\n",
        );
        let summary = summarize(&class).unwrap();
        assert!(summary.contains("accuracy: 1 of 3 (33.3%)"), "{summary}");
        assert!(summary.contains("cat -> dog (2)"), "{summary}");
        let metrics = write(dir.path(), "m.csv", "epoch,trn_loss,val_loss,accuracy,seconds\n1,1.0,0.9,0.6,10\n2,0.8,0.7,0.7,11\n3,0.6,0.75,0.72,12\n");
        let summary = summarize(&metrics).unwrap();
        assert!(
            summary.contains("best val_loss 0.7000 at epoch 2"),
            "{summary}"
        );
        assert!(summary.contains("total training time: 33.0 s"), "{summary}");
    }

    #[test]
    fn draw_makes_a_grid_of_the_first_rows_or_a_plot() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["a.jpg", "b.jpg", "c.jpg"] {
            write_jpeg(&dir.path().join(name), 160, 120);
        }
        let bb = write(
            dir.path(),
            "bb.csv",
            "fn,bbox\na.jpg,10 10 100 150\nb.jpg,20 20 60 60\nc.jpg,0 0 119 159\n",
        );
        let out = dir.path().join("draw.png");
        let drawn = draw_artifact(&bb, 2, dir.path(), &out).unwrap();
        assert_eq!(png_size(&out), GridLayout::for_count(2, 4).size_px());
        assert!(drawn.what.contains("first 2 rows"));
        let metrics = write(
            dir.path(),
            "m.csv",
            "epoch,trn_loss,val_loss,accuracy,seconds\n1,1.0,0.9,0.6,10\n",
        );
        draw_artifact(&metrics, 12, dir.path(), &out).unwrap();
        assert_eq!(
            png_size(&out),
            (
                2 * crate::plot::METRICS_PANEL_PX.0,
                crate::plot::METRICS_PANEL_PX.1
            )
        );
    }

    /// Where a test leaves a picture to be looked at: `$VIZ_LOOK_DIR/name`
    /// when that is set, else inside the test's temp dir.
    fn look_path(dir: &Path, name: &str) -> PathBuf {
        match std::env::var_os("VIZ_LOOK_DIR") {
            Some(look) => {
                std::fs::create_dir_all(&look).unwrap();
                Path::new(&look).join(name)
            }
            None => dir.join(name),
        }
    }

    /// bb.csv naming a good image, then a zero-byte, a garbage and a missing one.
    fn bb_with_unreadable_images(dir: &Path) -> PathBuf {
        write_jpeg(&dir.join("good.jpg"), 160, 120);
        std::fs::write(dir.join("zero.jpg"), b"").unwrap();
        std::fs::write(dir.join("garbage.jpg"), b"<html>not a jpeg</html>").unwrap();
        write(
            dir,
            "bb.csv",
            "fn,bbox\ngood.jpg,10 10 100 150\nzero.jpg,1 1 9 9\ngarbage.jpg,1 1 9 9\nmissing.jpg,1 1 9 9\n",
        )
    }

    #[test]
    fn draw_marks_counts_and_warns_about_unreadable_images() {
        let dir = tempfile::tempdir().unwrap();
        let bb = bb_with_unreadable_images(dir.path());
        let out = look_path(dir.path(), "unreadable-grid.png");
        let drawn = draw_artifact(&bb, 12, dir.path(), &out).unwrap();
        let unreadable: Vec<(&Path, &str)> = drawn
            .unreadable
            .iter()
            .map(|(p, r)| (p.strip_prefix(dir.path()).unwrap(), r.as_str()))
            .collect();
        assert_eq!(unreadable.len(), 3, "{unreadable:?}");
        assert_eq!(
            unreadable[0],
            (Path::new("zero.jpg"), "empty file (0 bytes)")
        );
        assert_eq!(unreadable[1].0, Path::new("garbage.jpg"));
        assert!(
            unreadable[1].1.starts_with("cannot decode")
                || unreadable[1].1.starts_with("not an image"),
            "{unreadable:?}"
        );
        assert_eq!(unreadable[2], (Path::new("missing.jpg"), "missing"));
        assert!(
            drawn.what.contains("first 4 rows")
                && drawn
                    .what
                    .contains("3 unreadable images drawn as marked tiles")
                && drawn.what.contains("zero.jpg: empty file (0 bytes)"),
            "{}",
            drawn.what
        );
        // Each unreadable cell is the marked tile: the red X reaches its corners.
        let grid = image::open(&out).unwrap().into_rgb8();
        let layout = GridLayout::for_count(4, 4);
        for col in 1..4u32 {
            let x = layout.gap_px + col * (layout.cell_px + layout.gap_px);
            let corner = grid.get_pixel(x + 3, layout.gap_px + 3);
            assert!(
                corner.0[0] > 180 && corner.0[1] < 80,
                "cell {col}: {corner:?}"
            );
        }
        let first = grid.get_pixel(layout.gap_px + 3, layout.gap_px + layout.cell_px - 3);
        assert!(
            first.0[0] < 180 || first.0[1] > 80,
            "the good image is drawn: {first:?}"
        );
    }

    #[test]
    fn draw_can_fail_on_the_first_unreadable_image_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let bb = bb_with_unreadable_images(dir.path());
        let out = dir.path().join("x.png");
        let message = draw_artifact_with(&bb, 12, dir.path(), &out, OnBadImage::Fail)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&dir.path().join("zero.jpg").display().to_string())
                && message.contains("empty file (0 bytes)")
                && message.contains("bb.csv"),
            "{message}"
        );
        assert!(!out.exists(), "no picture on failure");
    }

    #[test]
    fn draw_refuses_rows_naming_files_outside_the_images_folder() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        let bb = write(
            dir.path(),
            "bb.csv",
            "fn,bbox\n../../../../etc/passwd,1 1 9 9\n",
        );
        let out = dir.path().join("x.png");
        let message = draw_artifact(&bb, 12, &images, &out)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!("{}:2: ", bb.display()))
                && message.contains("\"../../../../etc/passwd\" has a `..` component"),
            "{message}"
        );
        let predictions = write(
            dir.path(),
            "p.csv",
            "fn,bbox,true_bbox,iou\n/etc/passwd,1 1 9 9,1 1 9 9,1\n",
        );
        let message = draw_artifact(&predictions, 12, &images, &out)
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with(&format!("{}: line 2: ", predictions.display()))
                && message.contains("\"/etc/passwd\" is absolute"),
            "{message}"
        );
        #[cfg(unix)]
        {
            write_jpeg(&dir.path().join("secret.jpg"), 20, 20);
            std::os::unix::fs::symlink(dir.path().join("secret.jpg"), images.join("a.jpg"))
                .unwrap();
            let bb = write(dir.path(), "bb.csv", "fn,bbox\na.jpg,1 1 9 9\n");
            let message = draw_artifact(&bb, 12, &images, &out)
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&bb.display().to_string())
                    && message.contains("\"a.jpg\" resolves to")
                    && message.contains("outside the images folder"),
                "{message}"
            );
        }
        assert!(!out.exists());
    }

    #[test]
    fn dataset_image_that_is_unreadable_is_marked_or_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("000017.jpg"), b"").unwrap();
        let json = write(
            dir.path(),
            "ann.json",
            r#"{"images":[{"file_name":"000017.jpg","height":364,"width":480,"id":17}],
                "annotations":[{"image_id":17,"bbox":[184,61,95,138],"category_id":15,"id":1,"ignore":0}],
                "categories":[{"id":15,"name":"person"}]}"#,
        );
        let out = look_path(dir.path(), "unreadable-17.png");
        let drawn = draw_dataset_image_with(&json, dir.path(), 17, &out, OnBadImage::Skip).unwrap();
        assert_eq!(drawn.names, vec!["person"]);
        assert_eq!(
            drawn.unreadable,
            vec![(
                dir.path().join("000017.jpg"),
                "empty file (0 bytes)".to_owned()
            )]
        );
        assert_eq!(png_size(&out), (480, 364), "the annotated size");
        let message = draw_dataset_image(&json, dir.path(), 17, &dir.path().join("y.png"))
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("000017.jpg")
                && message.contains("empty file (0 bytes)")
                && message.contains("ann.json"),
            "{message}"
        );
    }

    #[test]
    fn dataset_image_gets_every_box_and_name() {
        let dir = tempfile::tempdir().unwrap();
        write_jpeg(&dir.path().join("000017.jpg"), 480, 364);
        let json = write(
            dir.path(),
            "ann.json",
            r#"{"images":[{"file_name":"000017.jpg","height":364,"width":480,"id":17}],
                "type":"instances",
                "annotations":[
                  {"segmentation":[],"area":13110,"iscrowd":0,"image_id":17,"bbox":[184,61,95,138],"category_id":15,"id":1,"ignore":0},
                  {"segmentation":[],"area":81326,"iscrowd":0,"image_id":17,"bbox":[89,77,314,259],"category_id":13,"id":2,"ignore":0}],
                "categories":[{"supercategory":"none","id":13,"name":"horse"},{"supercategory":"none","id":15,"name":"person"}]}"#,
        );
        let out = dir.path().join("17.png");
        let names = draw_dataset_image(&json, dir.path(), 17, &out).unwrap();
        assert_eq!(names, vec!["person", "horse"]);
        assert_eq!(png_size(&out), (480, 364));
        let image = image::open(&out).unwrap().into_rgb8();
        // person: [61, 184, 198, 278]; its top edge row 61 is white, row 59 black outline.
        assert_eq!(*image.get_pixel(230, 61), WHITE);
        assert_eq!(*image.get_pixel(230, 59), BLACK);
        let missing = draw_dataset_image(&json, dir.path(), 99, &out)
            .unwrap_err()
            .to_string();
        assert!(
            missing.contains("ann.json") && missing.contains("99"),
            "{missing}"
        );
    }
    #[test]
    fn lrg_bb_summary_has_classes_and_box_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(
            dir.path(),
            "lrg_bb.csv",
            "fn,cat,bbox\na.jpg,car,0 0 10 20\nb.jpg,horse,10 10 40 30\nc.jpg,car,0 0 10 20\n",
        );
        let summary = summarize(&path).unwrap();
        assert!(summary.contains("lrg_bb.csv (largest-object classes and boxes"));
        assert!(summary.contains("rows: 3"), "{summary}");
        assert!(summary.contains("classes: 2"), "{summary}");
        let car = summary
            .lines()
            .find(|l| l.trim_start().starts_with("car "))
            .unwrap();
        assert!(car.contains(" 2 ") && car.contains("66.7%"), "{car}");
        // widths 20, 20, 20; heights 10, 30, 10.
        assert!(
            summary.contains("  height       10.0       16.7       30.0"),
            "{summary}"
        );
    }

    /// A combined predictions CSV of five rows: `right_*` rows have the right
    /// class, `wrong_*` rows a wrong one.
    const COMBINED: &str = "fn,cat,true_cat,prob,bbox,true_bbox,iou\n\
        right_good.jpg,car,car,0.90,10 10 100 150,12 8 104 150,0.9000\n\
        wrong_unsure.jpg,dog,cat,0.40,20 20 60 60,20 20 60 60,1.0000\n\
        right_bad_box.jpg,car,car,0.99,0 0 20 20,60 60 110 150,0.0000\n\
        wrong_sure.jpg,dog,cat,0.80,10 10 100 150,10 10 100 150,1.0000\n\
        right_middling.jpg,horse,horse,0.50,10 10 60 60,10 10 80 80,0.4500\n";

    #[test]
    fn combined_summary_has_accuracy_iou_and_both() {
        let dir = tempfile::tempdir().unwrap();
        let path = write(dir.path(), "combined.csv", COMBINED);
        let summary = summarize(&path).unwrap();
        for expected in [
            "(class and bbox predictions)",
            "rows: 5",
            "accuracy: 3 of 5 (60.0%)",
            "cat -> dog (2)",
            "most confident mistakes: wrong_sure.jpg (dog 0.80, true cat), wrong_unsure.jpg (dog 0.40, true cat)",
            "IoU: min 0.000, mean 0.670, max 1.000",
            "IoU >= 0.5: 3 of 5 (60.0%)",
            "lowest IoU: right_bad_box.jpg (0.00), right_middling.jpg (0.45)",
            "right class and IoU >= 0.5: 1 of 5 (20.0%)",
        ] {
            assert!(
                summary.contains(expected),
                "missing `{expected}` in\n{summary}"
            );
        }
    }

    /// Each named image as a 160x120 gradient JPEG in `dir`.
    fn jpegs(dir: &Path, names: &[&str]) {
        for name in names {
            write_jpeg(&dir.join(name), 160, 120);
        }
    }

    fn worst(rows: usize) -> DrawOptions {
        DrawOptions {
            order: RowOrder::Worst,
            ..DrawOptions::first(rows)
        }
    }

    #[test]
    fn draws_lrg_bb_rows_as_labelled_boxes() {
        let dir = tempfile::tempdir().unwrap();
        jpegs(dir.path(), &["a.jpg", "b.jpg"]);
        let csv = dir.path().join("lrg_bb.csv");
        csv_export::write_lrg_bb(
            &csv,
            &[
                csv_export::LrgBbRow {
                    file_name: "a.jpg".into(),
                    category: "horse".into(),
                    bbox: [10.0, 20.0, 100.0, 150.0],
                },
                csv_export::LrgBbRow {
                    file_name: "b.jpg".into(),
                    category: "person".into(),
                    bbox: [30.0, 40.0, 90.0, 80.0],
                },
            ],
        )
        .unwrap();
        let out = look_path(dir.path(), "lrg_bb-grid.png");
        let drawn = draw_artifact(&csv, 12, dir.path(), &out).unwrap();
        assert_eq!(drawn.file_names, ["a.jpg", "b.jpg"]);
        assert!(drawn.what.starts_with("first 2 rows in a 1x2 grid"));
        let layout = GridLayout::for_count(2, 4);
        assert_eq!(png_size(&out), layout.size_px());
        // a.jpg (160x120) fills its 256 px cell's width at scale 1.6, bottom-aligned:
        // its box's left edge (x 20) is white at x 32, just below its label.
        let grid = image::open(&out).unwrap().into_rgb8();
        let (x0, y0) = (layout.gap_px, layout.gap_px + (layout.cell_px - 192));
        assert_eq!(*grid.get_pixel(x0 + 32, y0 + 140), WHITE);
        // The label: white text in the box's top-left corner.
        let label_white = (x0 + 36..x0 + 90)
            .flat_map(|x| (y0 + 18..y0 + 34).map(move |y| (x, y)))
            .filter(|&(x, y)| *grid.get_pixel(x, y) == WHITE)
            .count();
        assert!(label_white > 20, "{label_white} white label pixels");
    }

    #[test]
    fn draws_every_object_of_mbb_and_of_a_detectors_predictions() {
        let dir = tempfile::tempdir().unwrap();
        jpegs(dir.path(), &["a.jpg", "b.jpg", "c.jpg"]);
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write(
            "mbb.csv",
            "fn,bbox\na.jpg,10 20 100 150 5 5 30 30\nb.jpg,30 40 90 80\n",
        );
        write(
            "mbb_classes.csv",
            "fn,clas\na.jpg,horse person\nb.jpg,dog\n",
        );
        let mbb = dir.path().join("mbb.csv");
        assert_eq!(detect_kind(&mbb).unwrap(), ArtifactKind::Mbb);
        let out = look_path(dir.path(), "mbb.png");
        let drawn = draw_artifact(&mbb, 12, dir.path(), &out).unwrap();
        assert_eq!(drawn.file_names, ["a.jpg", "b.jpg"]);
        let summary = summarize(&mbb).unwrap();
        assert!(summary.contains("3 boxes, 1.50 per image"), "{summary}");

        // Detections: the images in the scored list's order, c.jpg with nothing found,
        // b.jpg's low score left out of the picture.
        write(
            "ssd.csv",
            "fn,cat,score,bbox\nb.jpg,dog,0.9,30 40 90 80\nb.jpg,cat,0.1,0 0 9 9\na.jpg,horse,0.5,10 20 100 150\n",
        );
        write("ssd_images.csv", "fn\na.jpg\nb.jpg\nc.jpg\n");
        let detections = dir.path().join("ssd.csv");
        assert_eq!(detect_kind(&detections).unwrap(), ArtifactKind::Detections);
        let rows = detection_rows(&detections, 0.25).unwrap();
        let found: Vec<(&str, usize)> = rows
            .iter()
            .map(|r| (r.file_name.as_str(), r.objects.len()))
            .collect();
        assert_eq!(found, [("a.jpg", 1), ("b.jpg", 1), ("c.jpg", 0)]);
        assert_eq!(rows[1].objects[0].1, "dog 0.90");
        let out = look_path(dir.path(), "ssd.png");
        let drawn = draw_artifact(&detections, 12, dir.path(), &out).unwrap();
        assert_eq!(drawn.file_names, ["a.jpg", "b.jpg", "c.jpg"]);
    }

    #[test]
    fn draws_combined_predictions_with_both_boxes_and_labels() {
        let dir = tempfile::tempdir().unwrap();
        jpegs(
            dir.path(),
            &[
                "right_good.jpg",
                "wrong_unsure.jpg",
                "right_bad_box.jpg",
                "wrong_sure.jpg",
                "right_middling.jpg",
            ],
        );
        let csv = write(dir.path(), "combined.csv", COMBINED);
        let out = look_path(dir.path(), "combined-first.png");
        let drawn = draw_artifact(&csv, 4, dir.path(), &out).unwrap();
        assert_eq!(
            drawn.file_names,
            [
                "right_good.jpg",
                "wrong_unsure.jpg",
                "right_bad_box.jpg",
                "wrong_sure.jpg"
            ]
        );
        assert_eq!(png_size(&out), GridLayout::for_count(4, 4).size_px());
        let grid = image::open(&out).unwrap().into_rgb8();
        assert!(grid.pixels().any(|p| *p == GROUND_TRUTH_COLOR));
        assert!(grid.pixels().any(|p| *p == WHITE));
        // The tiles say what is drawn: class, probability, truth, IoU, verdict.
        let mut images = ImageOpener::new(dir.path(), &csv, OnBadImage::Fail);
        let rows = read_combined_predictions(&csv).unwrap();
        let tiles = combined_prediction_tiles(&rows[1..2], &mut images).unwrap();
        assert_eq!(tiles[0].caption, "wrong_unsure.jpg  IoU 1.00  WRONG");
        let labels: Vec<_> = tiles[0]
            .annotations
            .iter()
            .map(|a| (a.label.clone().unwrap(), a.color))
            .collect();
        assert_eq!(
            labels,
            [
                ("true: cat".to_string(), GROUND_TRUTH_COLOR),
                ("dog 0.40".to_string(), PREDICTION_COLOR)
            ]
        );
    }

    #[test]
    fn worst_order_ranks_each_kind_of_predictions() {
        let dir = tempfile::tempdir().unwrap();
        jpegs(dir.path(), &["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]);
        let class = write(
            dir.path(),
            "class.csv",
            "fn,cat,true_cat,prob\na.jpg,car,car,0.9\nb.jpg,dog,cat,0.4\nc.jpg,car,car,0.3\nd.jpg,dog,cat,0.95\ne.jpg,cow,horse,0.4\n",
        );
        let bbox = write(
            dir.path(),
            "bbox.csv",
            "fn,bbox,true_bbox,iou\na.jpg,0 0 50 50,0 0 50 60,0.8\nb.jpg,0 0 50 50,40 40 90 90,0.1\nc.jpg,0 0 50 50,0 0 60 60,0.6\nd.jpg,0 0 50 50,45 45 90 90,0.1\ne.jpg,0 0 50 50,0 0 50 50,1.0\n",
        );
        let combined = write(
            dir.path(),
            "combined.csv",
            &COMBINED
                .replace("right_good", "a")
                .replace("wrong_unsure", "b")
                .replace("right_bad_box", "c")
                .replace("wrong_sure", "d")
                .replace("right_middling", "e"),
        );
        let cases = [
            (
                &class,
                ["d.jpg", "b.jpg", "e.jpg", "c.jpg"],
                "wrong classes, most confident first, then right ones, least confident first",
            ),
            (
                &bbox,
                ["b.jpg", "d.jpg", "c.jpg", "a.jpg"],
                "IoU (lowest first)",
            ),
            (
                &combined,
                ["d.jpg", "b.jpg", "c.jpg", "e.jpg"],
                "wrong classes, most confident first, then right ones, lowest IoU first",
            ),
        ];
        for (csv, expected, criterion) in cases {
            let out = look_path(
                dir.path(),
                &format!("worst-{}.png", csv.file_stem().unwrap().to_string_lossy()),
            );
            let drawn = draw_artifact_with_options(csv, dir.path(), &out, &worst(4)).unwrap();
            assert_eq!(drawn.file_names, expected, "{}", csv.display());
            assert!(
                drawn.what.starts_with("worst 4 of 5 rows by ")
                    && drawn.what.contains(criterion)
                    && drawn.what.ends_with("in a 1x4 grid"),
                "{}",
                drawn.what
            );
            // The title strip above the grid says which rows these are.
            let (width, height) = GridLayout::for_count(4, 4).size_px();
            assert_eq!(png_size(&out), (width, height + crate::grid::TITLE_PX));
            let picture = image::open(&out).unwrap().into_rgb8();
            assert!((0..crate::grid::TITLE_PX)
                .any(|y| (0..width).any(|x| *picture.get_pixel(x, y) == WHITE)));
        }
        // The first order of the same CSV is its first rows, without a title.
        let out = dir.path().join("first.png");
        let drawn =
            draw_artifact_with_options(&class, dir.path(), &out, &DrawOptions::first(2)).unwrap();
        assert_eq!(drawn.file_names, ["a.jpg", "b.jpg"]);
        assert_eq!(png_size(&out), GridLayout::for_count(2, 4).size_px());
    }

    #[test]
    fn worst_order_on_a_csv_that_is_not_predictions_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        jpegs(dir.path(), &["a.jpg"]);
        let out = dir.path().join("x.png");
        for (name, text) in [
            ("bb.csv", "fn,bbox\na.jpg,1 1 9 9\n"),
            ("lrg_bb.csv", "fn,cat,bbox\na.jpg,car,1 1 9 9\n"),
            ("m.csv", "epoch,trn_loss,val_loss,seconds\n1,1.0,0.9,10\n"),
        ] {
            let csv = write(dir.path(), name, text);
            let message = draw_artifact_with_options(&csv, dir.path(), &out, &worst(12))
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&format!("{}: order `worst`", csv.display()))
                    && message.contains("not a predictions CSV"),
                "{message}"
            );
            assert!(!out.exists(), "no picture on failure");
        }
    }
}
