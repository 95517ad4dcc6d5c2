//! Plots as PNG (plotters' bitmap backend): the lr_find curve and per-epoch
//! losses and metrics. Text uses the embedded DejaVu Sans Bold, registered
//! with plotters' ab_glyph backend, so no system font library is needed.

use crate::artifacts::{
    read_lr_find, read_lr_suggestion, read_metrics, LrFindPoint, LrSuggestion, MetricsTable,
};
use crate::draw::{text_coverage, FONT_BYTES};
use crate::{save_png, Result, VizError};
use image::RgbImage;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters_backend::text_anchor::{HPos, VPos};
// The backend traits by path only: in scope, `BackendStyle::stroke_width` would clash with `Color::stroke_width`.
use plotters_backend::{self as backend, BackendColor, BackendCoord, DrawingErrorKind};
use std::path::Path;
use std::sync::Once;

const FONT_FAMILY: &str = "sans-serif";

/// Registered as a fallback: [`PlotBackend`] draws all text itself, but
/// plotters resolves a font for every text style it builds.
fn register_font() {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        if plotters::style::register_font(FONT_FAMILY, FontStyle::Normal, FONT_BYTES).is_err() {
            panic!("the embedded DejaVu Sans Bold is a valid font");
        }
    });
}

fn plot_error(out: &Path, error: impl std::fmt::Display) -> VizError {
    VizError::Plot {
        path: out.to_path_buf(),
        message: error.to_string(),
    }
}

/// plotters' bitmap backend with text drawn by viz's own rasteriser.
///
/// plotters' ab_glyph text places each glyph by its rounded bounding box, so
/// at tick-label sizes a period floats a pixel or two above the baseline
/// ("0·49"); laying the line out on one baseline fixes that. Everything
/// else is passed to the bitmap backend.
struct PlotBackend<'a> {
    bitmap: BitMapBackend<'a>,
}

type BackendResult<T = ()> =
    std::result::Result<T, DrawingErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

impl DrawingBackend for PlotBackend<'_> {
    type ErrorType = <BitMapBackend<'static> as DrawingBackend>::ErrorType;

    fn get_size(&self) -> (u32, u32) {
        self.bitmap.get_size()
    }
    fn ensure_prepared(&mut self) -> BackendResult {
        self.bitmap.ensure_prepared()
    }
    fn present(&mut self) -> BackendResult {
        self.bitmap.present()
    }
    fn draw_pixel(&mut self, point: BackendCoord, color: BackendColor) -> BackendResult {
        self.bitmap.draw_pixel(point, color)
    }
    fn draw_line<S: backend::BackendStyle>(
        &mut self,
        from: BackendCoord,
        to: BackendCoord,
        style: &S,
    ) -> BackendResult {
        self.bitmap.draw_line(from, to, style)
    }
    fn draw_rect<S: backend::BackendStyle>(
        &mut self,
        upper_left: BackendCoord,
        bottom_right: BackendCoord,
        style: &S,
        fill: bool,
    ) -> BackendResult {
        self.bitmap.draw_rect(upper_left, bottom_right, style, fill)
    }
    fn draw_path<S: backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        path: I,
        style: &S,
    ) -> BackendResult {
        self.bitmap.draw_path(path, style)
    }
    fn draw_circle<S: backend::BackendStyle>(
        &mut self,
        center: BackendCoord,
        radius: u32,
        style: &S,
        fill: bool,
    ) -> BackendResult {
        self.bitmap.draw_circle(center, radius, style, fill)
    }
    fn fill_polygon<S: backend::BackendStyle, I: IntoIterator<Item = BackendCoord>>(
        &mut self,
        vert: I,
        style: &S,
    ) -> BackendResult {
        self.bitmap.fill_polygon(vert, style)
    }
    fn blit_bitmap(&mut self, pos: BackendCoord, size: (u32, u32), src: &[u8]) -> BackendResult {
        self.bitmap.blit_bitmap(pos, size, src)
    }
    fn estimate_text_size<TStyle: backend::BackendTextStyle>(
        &self,
        text: &str,
        style: &TStyle,
    ) -> BackendResult<(u32, u32)> {
        Ok(text_coverage(text, style.size() as f32).dimensions())
    }
    fn draw_text<TStyle: backend::BackendTextStyle>(
        &mut self,
        text: &str,
        style: &TStyle,
        pos: BackendCoord,
    ) -> BackendResult {
        let color = style.color();
        if color.alpha == 0.0 {
            return Ok(());
        }
        let coverage = text_coverage(text, style.size() as f32);
        let (width, height) = (coverage.width() as i32, coverage.height() as i32);
        let dx = match style.anchor().h_pos {
            HPos::Left => 0,
            HPos::Right => -width,
            HPos::Center => -width / 2,
        };
        let dy = match style.anchor().v_pos {
            VPos::Top => 0,
            VPos::Center => -height / 2,
            VPos::Bottom => -height,
        };
        let transform = style.transform();
        let (canvas_width, canvas_height) = self.get_size();
        for (x, y, value) in coverage.enumerate_pixels() {
            if value.0[0] == 0 {
                continue;
            }
            let (tx, ty) = transform.transform(x as i32 + dx, y as i32 + dy);
            let (px, py) = (pos.0 + tx, pos.1 + ty);
            if px >= 0 && py >= 0 && (px as u32) < canvas_width && (py as u32) < canvas_height {
                let alpha = color.alpha * f64::from(value.0[0]) / 255.0;
                self.bitmap.draw_pixel(
                    (px, py),
                    BackendColor {
                        alpha,
                        rgb: color.rgb,
                    },
                )?;
            }
        }
        Ok(())
    }
}

/// Renders with `draw` into an in-memory bitmap, then writes it atomically as PNG.
fn render_png(
    out: &Path,
    (width, height): (u32, u32),
    draw: impl FnOnce(&DrawingArea<PlotBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<()> {
    register_font();
    let mut buffer = vec![0u8; width as usize * height as usize * 3];
    {
        let bitmap = BitMapBackend::with_buffer(&mut buffer, (width, height));
        let root = PlotBackend { bitmap }.into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(out, e))?;
        draw(&root).map_err(|e| plot_error(out, e))?;
        root.present().map_err(|e| plot_error(out, e))?;
    }
    let image =
        RgbImage::from_raw(width, height, buffer).expect("buffer holds width x height RGB pixels");
    save_png(&image, out)
}

/// The lesson's `learn.sched.plot()`: smoothed loss against learning rate on
/// a log axis, leaving out the first `skip_start` and last `skip_end` points
/// (the warm-up and the blow-up, which would squash the interesting part).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LrFindPlotOptions {
    pub skip_start: usize,
    pub skip_end: usize,
    pub width: u32,
    pub height: u32,
}

impl Default for LrFindPlotOptions {
    fn default() -> Self {
        LrFindPlotOptions {
            skip_start: 10,
            skip_end: 5,
            width: 800,
            height: 500,
        }
    }
}

/// Reads the lr_find CSV and JSON and plots the curve with the suggested LR marked.
pub fn plot_lr_find(
    csv: &Path,
    json: &Path,
    out: &Path,
    options: &LrFindPlotOptions,
) -> Result<()> {
    let points = read_lr_find(csv)?;
    let suggestion = read_lr_suggestion(json)?;
    if points.is_empty() {
        return Err(VizError::invalid(csv, "no lr_find points to plot"));
    }
    plot_lr_find_points(&points, Some(&suggestion), out, options)
}

/// The points `plot_lr_find` draws: all but the skipped ends, or every point
/// when too few remain to show a curve.
pub fn lr_find_plotted<'a>(
    points: &'a [LrFindPoint],
    options: &LrFindPlotOptions,
) -> &'a [LrFindPoint] {
    if points.len() >= options.skip_start + options.skip_end + 2 {
        &points[options.skip_start..points.len() - options.skip_end]
    } else {
        if !points.is_empty() {
            tracing::warn!(
                "lr_find plot: only {} points, fewer than skip_start {} + skip_end {} + 2; plotting all of them",
                points.len(),
                options.skip_start,
                options.skip_end
            );
        }
        points
    }
}

pub fn plot_lr_find_points(
    points: &[LrFindPoint],
    suggestion: Option<&LrSuggestion>,
    out: &Path,
    options: &LrFindPlotOptions,
) -> Result<()> {
    let shown = lr_find_plotted(points, options);
    let finite: Vec<(f64, f64)> = shown
        .iter()
        .filter(|p| p.smooth_loss.is_finite() && p.lr > 0.0)
        .map(|p| (p.lr, p.smooth_loss))
        .collect();
    if finite.is_empty() {
        return Err(VizError::invalid(out, "lr_find has no finite loss to plot"));
    }
    let (lr_min, lr_max) = padded_log_range(finite.iter().map(|p| p.0));
    let (loss_min, loss_max) = padded_range(finite.iter().map(|p| p.1));
    let raw: Vec<(f64, f64)> = shown
        .iter()
        .filter(|p| p.loss.is_finite() && (loss_min..=loss_max).contains(&p.loss))
        .map(|p| (p.lr, p.loss))
        .collect();
    render_png(out, (options.width, options.height), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption("lr_find", (FONT_FAMILY, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d((lr_min..lr_max).log_scale(), loss_min..loss_max)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("learning rate (log scale)")
            .y_desc("loss")
            .x_label_formatter(&|lr| format!("{lr:.0e}"))
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 15))
            .draw()
            .map_err(|e| e.to_string())?;
        let raw_color = RGBColor(190, 190, 190);
        chart
            .draw_series(
                raw.iter()
                    .map(|&point| Circle::new(point, 2, raw_color.filled())),
            )
            .map_err(|e| e.to_string())?
            .label("loss")
            .legend(move |(x, y)| Circle::new((x + 10, y), 3, raw_color.filled()));
        chart
            .draw_series(LineSeries::new(
                finite.iter().copied(),
                BLUE.stroke_width(2),
            ))
            .map_err(|e| e.to_string())?
            .label("smoothed loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLUE.stroke_width(2)));
        if let Some(suggestion) = suggestion {
            let marks = [
                (suggestion.suggested_lr, RED, "suggested lr"),
                (suggestion.min_loss_lr, RGBColor(0, 150, 0), "min loss lr"),
            ];
            for (lr, color, name) in marks {
                if !(lr_min..=lr_max).contains(&lr) {
                    continue;
                }
                chart
                    .draw_series(LineSeries::new(
                        vec![(lr, loss_min), (lr, loss_max)],
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(format!("{name} {lr:.1e}"))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                if let Some(&(_, loss)) = finite.iter().min_by(|a, b| {
                    (a.0.ln() - lr.ln())
                        .abs()
                        .total_cmp(&(b.0.ln() - lr.ln()).abs())
                }) {
                    chart
                        .draw_series(std::iter::once(Circle::new((lr, loss), 6, color.filled())))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT_FAMILY, 14))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}

/// Upper right for a falling curve (losses), lower right for a rising one
/// (accuracy, IoU): the corner the curve's end stays away from.
fn legend_position(values: &[f64]) -> SeriesLabelPosition {
    let mut finite = values.iter().filter(|v| v.is_finite());
    match (finite.next(), finite.next_back()) {
        (Some(first), Some(last)) if last > first => SeriesLabelPosition::LowerRight,
        _ => SeriesLabelPosition::UpperRight,
    }
}

fn padded_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    let pad = if max > min {
        (max - min) * 0.05
    } else {
        min.abs().max(1.0) * 0.05
    };
    (min - pad, max + pad)
}

fn padded_log_range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (min, max) = padded_range(values.map(f64::log10));
    (10f64.powf(min), 10f64.powf(max))
}

/// Size of one panel of the metrics plot.
pub const METRICS_PANEL_PX: (u32, u32) = (460, 380);

/// Per-epoch losses and metrics from a metrics CSV: one panel with
/// trn_loss and val_loss, then one panel per metric column.
pub fn plot_metrics(csv: &Path, out: &Path) -> Result<()> {
    let table = read_metrics(csv)?;
    if table.rows.is_empty() {
        return Err(VizError::invalid(csv, "no epochs to plot"));
    }
    plot_metrics_table(&table, out)
}

/// `(width, height)` of the metrics plot for `table`.
pub fn metrics_plot_size(table: &MetricsTable) -> (u32, u32) {
    let panels = 1 + table.metric_columns().len() as u32;
    (METRICS_PANEL_PX.0 * panels, METRICS_PANEL_PX.1)
}

pub fn plot_metrics_table(table: &MetricsTable, out: &Path) -> Result<()> {
    let epochs = table
        .column("epoch")
        .expect("read_metrics checked the epoch column");
    // (panel title, [(series name, value per epoch)])
    type Panel<'t> = (String, Vec<(&'t str, Vec<f64>)>);
    let mut panels: Vec<Panel> = vec![(
        "loss".to_string(),
        vec![
            ("trn_loss", table.column("trn_loss").expect("checked")),
            ("val_loss", table.column("val_loss").expect("checked")),
        ],
    )];
    for metric in table.metric_columns() {
        panels.push((
            metric.to_string(),
            vec![(metric, table.column(metric).expect("listed column"))],
        ));
    }
    let (epoch_min, epoch_max) = {
        let (lo, hi) = epochs
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &e| {
                (lo.min(e), hi.max(e))
            });
        if hi > lo {
            (lo - 0.2, hi + 0.2)
        } else {
            (lo - 1.0, hi + 1.0)
        }
    };
    let palette = [
        RGBColor(31, 119, 180),
        RGBColor(255, 127, 14),
        RGBColor(44, 160, 44),
    ];
    render_png(out, metrics_plot_size(table), |root| {
        let areas = root.split_evenly((1, panels.len()));
        for ((title, series), area) in panels.iter().zip(areas.iter()) {
            let values = series
                .iter()
                .flat_map(|(_, v)| v.iter().copied())
                .filter(|v| v.is_finite());
            let (y_min, y_max) = padded_range(values);
            let (y_min, y_max) = if y_min.is_finite() {
                (y_min, y_max)
            } else {
                (0.0, 1.0)
            };
            let mut chart = ChartBuilder::on(area)
                .caption(title, (FONT_FAMILY, 20))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(55)
                .build_cartesian_2d(epoch_min..epoch_max, y_min..y_max)
                .map_err(|e| e.to_string())?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_labels(epochs.len().clamp(2, 10))
                .x_label_formatter(&|e| format!("{e:.0}"))
                .label_style((FONT_FAMILY, 13))
                .axis_desc_style((FONT_FAMILY, 14))
                .draw()
                .map_err(|e| e.to_string())?;
            for ((name, values), color) in series.iter().zip(palette.iter().cycle()) {
                let color = *color;
                let points: Vec<(f64, f64)> = epochs
                    .iter()
                    .copied()
                    .zip(values.iter().copied())
                    .filter(|(_, v)| v.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(
                        points.iter().copied(),
                        color.stroke_width(2),
                    ))
                    .map_err(|e| e.to_string())?
                    .label(*name)
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                    .map_err(|e| e.to_string())?;
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.85))
                .border_style(BLACK)
                .label_font((FONT_FAMILY, 13))
                .position(legend_position(&series[0].1))
                .draw()
                .map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::png_size;

    fn lr_points(count: usize) -> Vec<LrFindPoint> {
        (0..count)
            .map(|i| {
                let lr = 1e-5 * 10f64.powf(i as f64 * 5.0 / count as f64);
                // A valley around 1e-2, then a blow-up.
                let loss = 2.0 + (lr.log10() + 2.0).powi(2) * 0.1;
                LrFindPoint {
                    iteration: i as u64,
                    lr,
                    loss: loss + 0.05 * ((i % 3) as f64 - 1.0),
                    smooth_loss: loss,
                }
            })
            .collect()
    }

    #[test]
    fn lr_find_skips_the_ends_as_configured() {
        let points = lr_points(100);
        let options = LrFindPlotOptions::default();
        let shown = lr_find_plotted(&points, &options);
        assert_eq!(shown.len(), 85);
        assert_eq!(shown[0].iteration, 10);
        assert_eq!(shown.last().unwrap().iteration, 94);
        let custom = LrFindPlotOptions {
            skip_start: 0,
            skip_end: 1,
            ..options
        };
        assert_eq!(lr_find_plotted(&points, &custom).len(), 99);
        assert_eq!(
            lr_find_plotted(&points[..12], &options).len(),
            12,
            "too few points: all are shown"
        );
    }

    #[test]
    fn lr_find_plot_is_a_png_of_the_requested_size_with_the_suggestion_marked() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("lr_find.csv");
        let mut text = String::from("iteration,lr,loss,smooth_loss\n");
        for p in lr_points(100) {
            text += &format!("{},{},{},{}\n", p.iteration, p.lr, p.loss, p.smooth_loss);
        }
        std::fs::write(&csv, text).unwrap();
        let json = dir.path().join("lr_find.json");
        std::fs::write(&json, r#"{"suggested_lr": 0.001, "min_loss_lr": 0.01}"#).unwrap();
        let out = dir.path().join("lr_find.png");
        let options = LrFindPlotOptions {
            width: 640,
            height: 400,
            ..Default::default()
        };
        plot_lr_find(&csv, &json, &out, &options).unwrap();
        assert_eq!(png_size(&out), (640, 400));
        let image = image::open(&out).unwrap().into_rgb8();
        assert!(
            image.pixels().any(|p| p.0 == [255, 0, 0]),
            "the suggested lr line is drawn in red"
        );
        assert!(
            image.pixels().any(|p| p.0 == [0, 0, 255]),
            "the smoothed loss is drawn in blue"
        );
    }

    #[test]
    fn metrics_plot_has_one_panel_per_metric() {
        let dir = tempfile::tempdir().unwrap();
        let csv = dir.path().join("metrics.csv");
        std::fs::write(
            &csv,
            "epoch,trn_loss,val_loss,l1_px,mean_iou,seconds\n1,40.0,35.0,35.0,0.35,10\n2,30.0,29.0,29.0,0.45,10\n3,25.0,,27.0,0.5,10\n",
        )
        .unwrap();
        let out = dir.path().join("metrics.png");
        plot_metrics(&csv, &out).unwrap();
        assert_eq!(png_size(&out), (3 * METRICS_PANEL_PX.0, METRICS_PANEL_PX.1));

        let single = dir.path().join("single.csv");
        std::fs::write(
            &single,
            "epoch,trn_loss,val_loss,accuracy,seconds\n0,1.2,1.1,0.7,5\n",
        )
        .unwrap();
        plot_metrics(&single, &out).unwrap();
        assert_eq!(png_size(&out), (2 * METRICS_PANEL_PX.0, METRICS_PANEL_PX.1));

        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "epoch,trn_loss,val_loss,seconds\n").unwrap();
        assert!(plot_metrics(&empty, &out)
            .unwrap_err()
            .to_string()
            .contains("empty.csv"));
    }
}

/// One class's precision-recall curve for [`plot_pr_curves`].
#[derive(Debug, Clone, PartialEq)]
pub struct PrCurve {
    pub name: String,
    /// The AP the legend shows beside the name.
    pub ap: f64,
    /// `(recall, precision)` points, best score first.
    pub points: Vec<(f64, f64)>,
}

/// Precision against recall for every class on one chart, the legend giving
/// each class's AP (the evaluate stage's picture of a detector).
pub fn plot_pr_curves(curves: &[PrCurve], title: &str, out: &Path) -> Result<()> {
    if curves.is_empty() {
        return Err(VizError::invalid(
            out,
            "no class has a precision-recall curve",
        ));
    }
    render_png(out, (1000, 700), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT_FAMILY, 22))
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
            .map_err(|e| e.to_string())?;
        chart
            .configure_mesh()
            .x_desc("recall")
            .y_desc("precision")
            .label_style((FONT_FAMILY, 14))
            .axis_desc_style((FONT_FAMILY, 15))
            .draw()
            .map_err(|e| e.to_string())?;
        for (i, curve) in curves.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(
                    curve.points.iter().copied(),
                    color.stroke_width(2),
                ))
                .map_err(|e| e.to_string())?
                .label(format!("{} {:.3}", curve.name, curve.ap))
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FONT_FAMILY, 13))
            // Curves fall from the top left towards the right: the lower left stays clear.
            .position(SeriesLabelPosition::LowerLeft)
            .draw()
            .map_err(|e| e.to_string())?;
        Ok(())
    })
}
