//! `report.html` for one pipeline run: self-contained (CSS inline, pictures
//! embedded as base64 data URIs), so it opens offline and survives being copied.

use crate::artifacts::read_string_table;
use crate::{write_bytes_atomic, Result};
use base64::Engine;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

pub use pipeline::{format_bytes, StageState};

/// What the runner knows after a run; it fills this and calls [`write_report`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub pipeline: String,
    pub data_dir: PathBuf,
    /// Stages in run order.
    pub stages: Vec<StageReport>,
    /// CSVs shown as tables (metrics, predictions...).
    #[serde(default)]
    pub tables: Vec<ReportFile>,
    /// PNGs the run made.
    #[serde(default)]
    pub pictures: Vec<ReportFile>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    /// Names of the stages this one reads outputs of.
    #[serde(default)]
    pub depends_on: Vec<String>,
    pub state: StageState,
    /// Wall time of this run of the stage; `None` when it did not run.
    #[serde(default)]
    pub seconds: Option<f64>,
    /// Why it failed or was skipped, if known.
    #[serde(default)]
    pub message: Option<String>,
    /// Peak resident memory of this run of the stage (its process, or the
    /// runner's for stages that run in it), in bytes.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
}

/// The report's style for each state.
fn css_class(state: StageState) -> &'static str {
    match state {
        StageState::Ran => "ran",
        StageState::Skipped => "skipped",
        StageState::Failed => "failed",
        StageState::NeverRun => "never",
    }
}

/// A file shown in the report, with a heading.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportFile {
    pub title: String,
    pub path: PathBuf,
}

impl ReportFile {
    pub fn new(title: impl Into<String>, path: impl Into<PathBuf>) -> Self {
        ReportFile {
            title: title.into(),
            path: path.into(),
        }
    }
}

/// Tables up to this long are shown whole (a 24-epoch metrics table, the 20
/// classes of an AP table and their mean); longer ones show their first and last
/// `MAX_TABLE_ROWS / 2` rows and a count of those between: a per-epoch table's
/// result is in its last rows.
pub const MAX_TABLE_ROWS: usize = 40;

/// Writes `report` as one self-contained HTML file (atomically). Missing or
/// unreadable tables and pictures are reported in the page, not as errors:
/// a failed run still gets its report.
pub fn write_report(report: &RunReport, out_html: &Path) -> Result<()> {
    write_bytes_atomic(out_html, render_report(report).as_bytes())
}

pub fn render_report(report: &RunReport) -> String {
    let mut html = String::new();
    let title = format!("{} — run report", report.pipeline);
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n",
        escape(&title)
    );
    let _ = writeln!(html, "<h1>{}</h1>", escape(&title));
    let _ = writeln!(
        html,
        "<p>Pipeline <b>{}</b>, data <code>{}</code>. {}</p>",
        escape(&report.pipeline),
        escape(&report.data_dir.display().to_string()),
        escape(&state_counts(&report.stages))
    );
    render_stages(&mut html, &report.stages);
    if !report.tables.is_empty() {
        html.push_str("<h2>Tables</h2>\n");
        for table in &report.tables {
            render_table(&mut html, table);
        }
    }
    if !report.pictures.is_empty() {
        html.push_str("<h2>Pictures</h2>\n");
        for picture in &report.pictures {
            render_picture(&mut html, picture);
        }
    }
    html.push_str("</body>\n</html>\n");
    html
}

fn state_counts(stages: &[StageReport]) -> String {
    let states = [
        StageState::Ran,
        StageState::Skipped,
        StageState::Failed,
        StageState::NeverRun,
    ];
    let counts: Vec<String> = states
        .iter()
        .map(|&state| (state, stages.iter().filter(|s| s.state == state).count()))
        .filter(|&(_, count)| count > 0)
        .map(|(state, count)| format!("{count} {}", state.label()))
        .collect();
    format!("{} stages: {}.", stages.len(), counts.join(", "))
}

fn render_stages(html: &mut String, stages: &[StageReport]) {
    html.push_str("<h2>Stages</h2>\n");
    html.push_str(&dag_svg(stages));
    html.push_str("<table class=\"stages\">\n<tr><th>#</th><th>stage</th><th>kind</th><th>depends on</th><th>state</th><th>seconds</th><th>peak memory</th><th>note</th></tr>\n");
    for (index, stage) in stages.iter().enumerate() {
        let depends = if stage.depends_on.is_empty() {
            "—".to_string()
        } else {
            stage.depends_on.join(", ")
        };
        let seconds = stage
            .seconds
            .map(|s| format!("{s:.1}"))
            .unwrap_or_else(|| "—".into());
        let memory = stage
            .peak_memory_bytes
            .map(format_bytes)
            .unwrap_or_else(|| "—".into());
        let _ = writeln!(
            html,
            "<tr id=\"stage-{}\"><td>{}</td><td><b>{}</b></td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td>{}</td></tr>",
            escape(&stage.name),
            index + 1,
            escape(&stage.name),
            escape(&stage.kind),
            escape(&depends),
            css_class(stage.state),
            stage.state.label(),
            seconds,
            memory,
            escape(stage.message.as_deref().unwrap_or(""))
        );
    }
    html.push_str("</table>\n");
}

/// A CSV cell as the report shows it: numbers with a fractional part at four
/// significant digits (`47.400714219598186` -> `47.4`, `0.83412` -> `0.8341`),
/// everything else as written. The CSV itself keeps full precision.
pub fn readable_cell(cell: &str) -> String {
    let is_integer = cell.bytes().all(|b| b.is_ascii_digit() || b == b'-');
    match cell.parse::<f64>() {
        Ok(value) if !is_integer && value.is_finite() => readable_number(value),
        _ => cell.to_string(),
    }
}

/// Four significant digits without trailing zeros, in scientific notation
/// below 1e-3.
pub fn readable_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        return "0".to_string();
    }
    if magnitude < 1e-3 {
        return format!("{value:.3e}");
    }
    let decimals = (3 - magnitude.log10().floor() as i32).clamp(0, 6) as usize;
    let fixed = format!("{value:.decimals$}");
    if fixed.contains('.') {
        fixed
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    } else {
        fixed
    }
}

/// The DAG as an inline SVG: one column per depth (longest path from a
/// stage without dependencies), nodes coloured by state, arrows for dependencies.
fn dag_svg(stages: &[StageReport]) -> String {
    if stages.is_empty() {
        return String::new();
    }
    let index_of: HashMap<&str, usize> = stages
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    // Depth by repeated relaxation; bounded by the stage count so a cycle cannot loop forever.
    let mut depth = vec![0usize; stages.len()];
    for _ in 0..stages.len() {
        let mut changed = false;
        for (i, stage) in stages.iter().enumerate() {
            for dep in stage
                .depends_on
                .iter()
                .filter_map(|d| index_of.get(d.as_str()))
            {
                if depth[i] < depth[*dep] + 1 && depth[*dep] + 1 < stages.len() {
                    depth[i] = depth[*dep] + 1;
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let (node_w, node_h, col_gap, row_gap, margin) = (150.0, 44.0, 60.0, 14.0, 10.0);
    let mut row_in_column: HashMap<usize, usize> = HashMap::new();
    let positions: Vec<(f64, f64)> = depth
        .iter()
        .map(|&d| {
            let row = row_in_column.entry(d).or_insert(0);
            let position = (
                margin + d as f64 * (node_w + col_gap),
                margin + *row as f64 * (node_h + row_gap),
            );
            *row += 1;
            position
        })
        .collect();
    let columns = depth.iter().max().map_or(1, |d| d + 1) as f64;
    let rows = row_in_column.values().max().copied().unwrap_or(1) as f64;
    let width = 2.0 * margin + columns * node_w + (columns - 1.0) * col_gap;
    let height = 2.0 * margin + rows * node_h + (rows - 1.0) * row_gap;
    let mut svg = format!(
        "<svg class=\"dag\" xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" viewBox=\"0 0 {width} {height}\">\n\
         <defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n"
    );
    for (i, stage) in stages.iter().enumerate() {
        for dep in stage
            .depends_on
            .iter()
            .filter_map(|d| index_of.get(d.as_str()))
        {
            let (x1, y1) = (positions[*dep].0 + node_w, positions[*dep].1 + node_h / 2.0);
            let (x2, y2) = (positions[i].0, positions[i].1 + node_h / 2.0);
            let _ = writeln!(svg, "<line x1=\"{x1}\" y1=\"{y1}\" x2=\"{x2}\" y2=\"{y2}\" stroke=\"#555\" marker-end=\"url(#arrow)\"/>");
        }
    }
    for (stage, (x, y)) in stages.iter().zip(&positions) {
        let seconds = stage
            .seconds
            .map(|s| format!(" · {s:.1}s"))
            .unwrap_or_default();
        let _ = writeln!(
            svg,
            "<g class=\"node {}\"><rect x=\"{x}\" y=\"{y}\" width=\"{node_w}\" height=\"{node_h}\" rx=\"6\"/>\
             <text x=\"{}\" y=\"{}\" class=\"name\">{}</text><text x=\"{}\" y=\"{}\" class=\"state\">{}{}</text></g>",
            css_class(stage.state),
            x + 8.0,
            y + 18.0,
            escape(&stage.name),
            x + 8.0,
            y + 35.0,
            stage.state.label(),
            seconds
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn render_table(html: &mut String, file: &ReportFile) {
    let _ = writeln!(
        html,
        "<h3>{}</h3>\n<p class=\"path\"><code>{}</code></p>",
        escape(&file.title),
        escape(&file.path.display().to_string())
    );
    if !file.path.exists() {
        html.push_str("<p class=\"missing\">not produced by this run</p>\n");
        return;
    }
    let table = match read_string_table(&file.path) {
        Ok(table) => table,
        Err(error) => {
            let _ = writeln!(
                html,
                "<p class=\"missing\">cannot read: {}</p>",
                escape(&error.to_string())
            );
            return;
        }
    };
    html.push_str("<table class=\"data\">\n<tr>");
    for column in &table.header {
        let _ = write!(html, "<th>{}</th>", escape(column));
    }
    html.push_str("</tr>\n");
    // Whole up to the limit; beyond it the first and last halves around a count.
    let rows = &table.rows;
    let (head, tail) = if rows.len() > MAX_TABLE_ROWS {
        let half = MAX_TABLE_ROWS / 2;
        (&rows[..half], &rows[rows.len() - half..])
    } else {
        (&rows[..], &rows[..0])
    };
    head.iter().for_each(|row| render_row(html, row));
    if !tail.is_empty() {
        let _ = writeln!(
            html,
            "<tr><td class=\"path\" colspan=\"{}\">… {} rows left out …</td></tr>",
            table.header.len().max(1),
            rows.len() - MAX_TABLE_ROWS
        );
    }
    tail.iter().for_each(|row| render_row(html, row));
    html.push_str("</table>\n");
}

/// One data row, numbers right-aligned and shown at a readable precision.
fn render_row(html: &mut String, row: &[String]) {
    html.push_str("<tr>");
    for cell in row {
        let class = if cell.parse::<f64>().is_ok() {
            " class=\"num\""
        } else {
            ""
        };
        let _ = write!(html, "<td{class}>{}</td>", escape(&readable_cell(cell)));
    }
    html.push_str("</tr>\n");
}

fn render_picture(html: &mut String, file: &ReportFile) {
    let _ = writeln!(
        html,
        "<figure>\n<figcaption>{} <code>{}</code></figcaption>",
        escape(&file.title),
        escape(&file.path.display().to_string())
    );
    match std::fs::read(&file.path) {
        Ok(bytes) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            let _ = writeln!(
                html,
                "<img alt=\"{}\" src=\"data:image/png;base64,{encoded}\">",
                escape(&file.title)
            );
        }
        Err(error) => {
            let _ = writeln!(
                html,
                "<p class=\"missing\">not produced by this run ({})</p>",
                escape(&error.to_string())
            );
        }
    }
    html.push_str("</figure>\n");
}

pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: 'DejaVu Sans', Arial, sans-serif; margin: 24px; color: #222; max-width: 1500px; }
h1 { font-size: 22px; } h2 { font-size: 18px; border-bottom: 1px solid #ccc; padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 15px; margin-bottom: 2px; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.ran { background: #d4f4d4; } td.skipped { background: #e4e8f4; } td.failed { background: #f8c8c8; font-weight: bold; } td.never { background: #eee; color: #777; }
svg.dag { display: block; margin: 8px 0 12px; }
svg.dag rect { stroke: #555; stroke-width: 1; } svg.dag text { font-size: 13px; } svg.dag text.name { font-weight: bold; }
svg.dag .ran rect { fill: #d4f4d4; } svg.dag .skipped rect { fill: #e4e8f4; } svg.dag .failed rect { fill: #f8c8c8; } svg.dag .never rect { fill: #eee; }
.path { color: #666; font-size: 12px; margin: 2px 0; } .missing { color: #a33; font-style: italic; }
figure { margin: 16px 0; } figcaption { font-weight: bold; margin-bottom: 4px; } img { max-width: 100%; border: 1px solid #ddd; }
";

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(
        name: &str,
        depends_on: &[&str],
        state: StageState,
        seconds: Option<f64>,
    ) -> StageReport {
        StageReport {
            name: name.into(),
            kind: name.into(),
            depends_on: depends_on.iter().map(|d| d.to_string()).collect(),
            state,
            seconds,
            message: None,
            peak_memory_bytes: seconds.map(|s| (s * 1e9) as u64),
        }
    }

    #[test]
    fn figures_are_readable_and_cells_keep_their_text_otherwise() {
        for (cell, shown) in [
            ("47.400714219598186", "47.4"),
            ("0.83412", "0.8341"),
            ("0.77", "0.77"),
            ("19.9", "19.9"),
            ("1234.5678", "1235"),
            ("0.000012345", "1.234e-5"),
            ("2001", "2001"),
            ("-3", "-3"),
            ("car", "car"),
            ("NaN", "NaN"),
        ] {
            assert_eq!(readable_cell(cell), shown, "{cell}");
        }
        assert_eq!(format_bytes(6_100_000_000), "6.10 GB");
        assert_eq!(format_bytes(194_000_000), "194 MB");
    }

    #[test]
    fn report_lists_every_stage_table_and_picture() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = dir.path().join("metrics.csv");
        std::fs::write(
            &metrics,
            "epoch,trn_loss,val_loss,accuracy,seconds\n1,0.9,0.8,0.77,12.5\n",
        )
        .unwrap();
        let picture = dir.path().join("grid.png");
        crate::save_png(
            &image::RgbImage::from_pixel(4, 3, image::Rgb([1, 2, 3])),
            &picture,
        )
        .unwrap();
        let report = RunReport {
            pipeline: "bbox <lesson>".into(),
            data_dir: "/data/voc2007".into(),
            stages: vec![
                stage("annotations", &[], StageState::Skipped, None),
                stage("largest", &["annotations"], StageState::Ran, Some(0.25)),
                stage("train", &["largest"], StageState::Failed, Some(3.0)),
                stage("predict", &["train"], StageState::NeverRun, None),
            ],
            tables: vec![
                ReportFile::new("metrics", &metrics),
                ReportFile::new("absent metrics", dir.path().join("nope.csv")),
            ],
            pictures: vec![
                ReportFile::new("prediction grid", &picture),
                ReportFile::new("lr_find plot", dir.path().join("lr.png")),
            ],
        };
        let out = dir.path().join("report/report.html");
        write_report(&report, &out).unwrap();
        let html = std::fs::read_to_string(&out).unwrap();
        for stage in &report.stages {
            assert!(
                html.contains(&format!("<tr id=\"stage-{}\">", stage.name)),
                "stage {} missing",
                stage.name
            );
        }
        for state in [
            "<td class=\"ran\">ran</td>",
            "<td class=\"skipped\">skipped</td>",
            "<td class=\"failed\">failed</td>",
            "<td class=\"never\">never run</td>",
        ] {
            assert!(html.contains(state), "{state}");
        }
        assert!(
            html.contains("bbox &lt;lesson&gt;"),
            "pipeline name is escaped"
        );
        assert!(html.contains("/data/voc2007"));
        assert!(
            html.contains("<td class=\"num\">0.77</td>"),
            "metrics cells are rendered"
        );
        let png =
            base64::engine::general_purpose::STANDARD.encode(std::fs::read(&picture).unwrap());
        assert!(
            html.contains(&format!("src=\"data:image/png;base64,{png}\"")),
            "picture embedded"
        );
        assert!(
            html.contains("lr_find plot") && html.matches("not produced by this run").count() == 2
        );
        assert_eq!(
            html.matches("marker-end").count(),
            3,
            "one arrow per dependency"
        );
        assert!(
            !html.contains("src=\"http") && !html.contains("href=\"http"),
            "nothing loads from the network"
        );
        assert!(html.contains("4 stages: 1 ran, 1 skipped, 1 failed, 1 never run."));
        assert!(
            html.contains("<td class=\"num\">3.00 GB</td>"),
            "a stage's peak memory is shown"
        );
    }

    #[test]
    fn run_report_round_trips_through_json() {
        let report = RunReport {
            pipeline: "lrg".into(),
            data_dir: "d".into(),
            stages: vec![stage("a", &[], StageState::NeverRun, None)],
            tables: vec![],
            pictures: vec![ReportFile::new("p", "p.png")],
        };
        let json = serde_json::to_string(&report).unwrap();
        assert!(json.contains("\"never_run\""));
        assert_eq!(serde_json::from_str::<RunReport>(&json).unwrap(), report);
    }

    #[test]
    fn long_tables_keep_their_first_and_last_rows() {
        let dir = tempfile::tempdir().unwrap();
        let render = |rows: usize| {
            let csv = dir.path().join(format!("p{rows}.csv"));
            let mut text = String::from("fn,cat,true_cat,prob\n");
            for i in 0..rows {
                text += &format!("{i:06}.jpg,car,car,0.5\n");
            }
            std::fs::write(&csv, text).unwrap();
            render_report(&RunReport {
                tables: vec![ReportFile::new("predictions", &csv)],
                ..RunReport::default()
            })
        };
        // Up to the limit, whole.
        let html = render(MAX_TABLE_ROWS);
        assert_eq!(
            html.matches("<td>car</td><td>car</td>").count(),
            MAX_TABLE_ROWS
        );
        assert!(!html.contains("left out"));
        // Longer: the first and last halves, the rows between counted.
        let rows = MAX_TABLE_ROWS + 7;
        let html = render(rows);
        assert_eq!(
            html.matches("<td>car</td><td>car</td>").count(),
            MAX_TABLE_ROWS
        );
        assert!(html.contains("… 7 rows left out …"));
        let half = MAX_TABLE_ROWS / 2;
        let shown = |i: usize| html.contains(&format!("<td>{i:06}.jpg</td>"));
        assert!(shown(0) && shown(half - 1));
        assert!(!shown(half) && !shown(half + 6));
        assert!(shown(half + 7) && shown(rows - 1));
    }
}
