//! Pictures of what a model says about a user's own images (`cargo xtask predict`):
//! each image as a photo viewer shows it with the predicted box and an outlined label
//! with the probability (the lesson's style), a contact sheet, and an offline HTML page.

use crate::draw::{draw_annotations, Annotation, PREDICTION_COLOR};
use crate::grid::{render_grid, unreadable_tile, GridLayout, Tile};
use crate::images::read_image_as_viewed;
use base64::Engine;
use csv_export::ImagePrediction;
use image::{imageops, RgbImage};
use std::fmt::Write as _;

/// `dog 0.93`, or `dog 0.93 / cat 0.05` with more classes; `None` for a box-only model.
pub fn prediction_label(p: &ImagePrediction) -> Option<String> {
    if p.classes.is_empty() {
        return None;
    }
    Some(
        p.classes
            .iter()
            .map(|c| format!("{} {:.2}", c.class, c.prob))
            .collect::<Vec<_>>()
            .join(" / "),
    )
}

/// A detector's objects as text: `dog 0.93 [12 30 200 310], cat 0.41 [...]`.
fn objects_text(p: &ImagePrediction) -> String {
    p.objects
        .iter()
        .map(|o| {
            format!(
                "{} {:.2} [{}]",
                o.class,
                o.score,
                csv_export::format_bbox(&o.bbox)
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The box with the label at its corner, or the label alone, in the image's pixels;
/// a detector's every object with its class and score.
pub fn prediction_annotations(p: &ImagePrediction) -> Vec<Annotation> {
    let mut annotations = match (p.bbox, prediction_label(p)) {
        (Some(bbox), Some(label)) => vec![Annotation::labelled_box(bbox, label, PREDICTION_COLOR)],
        (Some(bbox), None) => vec![Annotation::bare_box(bbox, PREDICTION_COLOR)],
        (None, Some(label)) => vec![Annotation::label(label, PREDICTION_COLOR)],
        (None, None) => Vec::new(),
    };
    annotations.extend(p.objects.iter().map(|o| {
        Annotation::labelled_box(
            o.bbox,
            format!("{} {:.2}", o.class, o.score),
            PREDICTION_COLOR,
        )
    }));
    annotations
}

/// The image at its own resolution with its prediction drawn on it; labels scale with
/// the image so they read the same on a thumbnail and on a 12-megapixel photo.
pub fn draw_prediction(p: &ImagePrediction) -> Result<RgbImage, String> {
    let mut image = read_image_as_viewed(&p.file)?;
    let text_px = (image.width().min(image.height()) as f32 / 18.0).max(14.0);
    draw_annotations(&mut image, &prediction_annotations(p), text_px);
    Ok(image)
}

/// One tile per prediction, captioned with the file name; an image that could not be
/// read (by the model's loader or here) is a crossed-out tile with the reason.
pub fn prediction_tiles(predictions: &[ImagePrediction]) -> Vec<Tile> {
    predictions
        .iter()
        .map(|p| {
            let caption = p
                .file
                .file_name()
                .unwrap_or(p.file.as_os_str())
                .to_string_lossy()
                .into_owned();
            let image = match &p.error {
                Some(reason) => Err(reason.clone()),
                None => read_image_as_viewed(&p.file),
            };
            match image {
                Ok(image) => Tile {
                    image,
                    annotations: prediction_annotations(p),
                    caption,
                },
                Err(reason) => unreadable_tile(&reason, caption),
            }
        })
        .collect()
}

/// A contact sheet of the first `max` predictions, six across.
pub fn prediction_sheet(predictions: &[ImagePrediction], max: usize) -> RgbImage {
    let shown = &predictions[..predictions.len().min(max)];
    render_grid(
        &prediction_tiles(shown),
        &GridLayout::for_count(shown.len(), 6),
    )
}

/// A self-contained HTML page: one row per image with its drawing (embedded, at most
/// `thumb_px` on a side), the file, the classes and the box; skipped images in red with
/// the reason.
pub fn predictions_html(predictions: &[ImagePrediction], model: &str, thumb_px: u32) -> String {
    let skipped = predictions.iter().filter(|p| p.error.is_some()).count();
    let mut html = String::new();
    let _ = write!(
        html,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>predictions</title>\n\
         <style>body{{font-family:sans-serif;margin:1em}}td{{padding:4px 8px;vertical-align:top}}\
         tr:nth-child(even){{background:#f4f4f4}}.skipped{{color:#b00}}code{{font-size:90%}}</style>\n\
         </head><body>\n<h1>Predictions</h1>\n<p>model <code>{}</code>: {} images, {} skipped</p>\n\
         <table>\n<tr><th>image</th><th>file</th><th>classes</th><th>box (top left bottom right)</th></tr>\n",
        escape(model),
        predictions.len(),
        skipped
    );
    for p in predictions {
        let file = escape(&p.file.display().to_string());
        if let Some(reason) = &p.error {
            let _ = writeln!(
                html,
                "<tr class=\"skipped\"><td></td><td><code>{file}</code></td><td colspan=\"2\">skipped: {}</td></tr>",
                escape(reason)
            );
            continue;
        }
        let picture = match draw_prediction(p) {
            Ok(image) => {
                let (w, h) = image.dimensions();
                let scale = (thumb_px as f32 / w.max(h) as f32).min(1.0);
                let thumb = imageops::thumbnail(
                    &image,
                    ((w as f32 * scale) as u32).max(1),
                    ((h as f32 * scale) as u32).max(1),
                );
                let mut png = Vec::new();
                match thumb.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png) {
                    Ok(()) => format!(
                        "<img alt=\"{file}\" src=\"data:image/png;base64,{}\">",
                        base64::engine::general_purpose::STANDARD.encode(png)
                    ),
                    Err(e) => escape(&e.to_string()),
                }
            }
            Err(reason) => format!("<span class=\"skipped\">{}</span>", escape(&reason)),
        };
        let _ = writeln!(
            html,
            "<tr><td>{picture}</td><td><code>{file}</code><br>{} x {}</td><td>{}</td><td>{}</td></tr>",
            p.width,
            p.height,
            escape(&prediction_label(p).unwrap_or_else(|| objects_text(p))),
            p.bbox.map(|b| csv_export::format_bbox(&b)).unwrap_or_default()
        );
    }
    html.push_str("</table>\n</body></html>\n");
    html
}

fn escape(text: &str) -> String {
    crate::report::escape(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use csv_export::ClassScore;

    fn prediction(file: std::path::PathBuf) -> ImagePrediction {
        ImagePrediction {
            file,
            width: 60,
            height: 40,
            classes: vec![
                ClassScore {
                    class: "dog".into(),
                    prob: 0.9,
                },
                ClassScore {
                    class: "<cat>".into(),
                    prob: 0.05,
                },
            ],
            bbox: Some([5.0, 10.0, 30.0, 50.0]),
            objects: Vec::new(),
            error: None,
        }
    }

    #[test]
    fn draws_box_and_label_and_marks_skipped_images() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("grey.png");
        RgbImage::from_pixel(60, 40, image::Rgb([128, 128, 128]))
            .save(&path)
            .unwrap();
        let p = prediction(path);
        assert_eq!(prediction_label(&p).unwrap(), "dog 0.90 / <cat> 0.05");
        let drawn = draw_prediction(&p).unwrap();
        assert_eq!(drawn.dimensions(), (60, 40));
        // The box's outline changes pixels along its left edge.
        assert_ne!(drawn.get_pixel(10, 20), &image::Rgb([128, 128, 128]));

        let skipped = ImagePrediction::skipped(dir.path().join("bad.jpg"), "cannot decode".into());
        let html = predictions_html(&[p.clone(), skipped.clone()], "m.safetensors", 64);
        assert!(html.contains("&lt;cat&gt;"), "labels are escaped");
        assert!(html.contains("skipped: cannot decode"));
        assert!(html.contains("data:image/png;base64,"));
        assert_eq!(prediction_tiles(&[p, skipped]).len(), 2);
    }
}
