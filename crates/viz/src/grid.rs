//! R x C grids of annotated images (the lesson's `plt.subplots(3, 4)` loops):
//! each cell an image scaled to fit, its boxes and labels drawn at the cell's
//! resolution (so lines keep their width), and a caption under it.
//!
//! Images are opened through [`ImageOpener`]: an unreadable one is, by the
//! [`OnBadImage`] the caller passes, an error naming it or a warning, an
//! entry in the returned [`DrawSummary`] and an [`unreadable_tile`] in its
//! cell.

use crate::artifacts::{
    read_bbox_predictions, read_class_predictions, BboxPrediction, ClassPrediction,
    CombinedPrediction,
};
use crate::draw::{
    draw_annotations, draw_text, text_extent, Annotation, TextStyle, GROUND_TRUTH_COLOR,
    PREDICTION_COLOR, WHITE,
};
use crate::images::{unreadable_image, DrawSummary, ImageOpener, OnBadImage};
use crate::{save_png, Result, VizError};
use csv_export::{BbRow, LrgBbRow, LrgRow};
use image::{imageops, Rgb, RgbImage};
use std::path::Path;

const BACKGROUND: Rgb<u8> = Rgb([32, 32, 32]);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GridLayout {
    pub rows: usize,
    pub cols: usize,
    /// Each image is scaled to fit a square of this many pixels.
    pub cell_px: u32,
    /// Height of the caption strip under each cell.
    pub caption_px: u32,
    pub gap_px: u32,
    /// Size of labels drawn on the images.
    pub label_px: f32,
}

impl Default for GridLayout {
    /// The lesson's 3 x 4 grid.
    fn default() -> Self {
        GridLayout {
            rows: 3,
            cols: 4,
            cell_px: 256,
            caption_px: 22,
            gap_px: 6,
            label_px: 15.0,
        }
    }
}

impl GridLayout {
    /// The smallest grid of at most `max_cols` columns that holds `count` images.
    pub fn for_count(count: usize, max_cols: usize) -> Self {
        let cols = count.clamp(1, max_cols.max(1));
        GridLayout {
            rows: count.max(1).div_ceil(cols),
            cols,
            ..GridLayout::default()
        }
    }
    pub fn capacity(&self) -> usize {
        self.rows * self.cols
    }
    /// `(width, height)` of the rendered grid in pixels.
    pub fn size_px(&self) -> (u32, u32) {
        let (rows, cols) = (self.rows as u32, self.cols as u32);
        let width = cols * self.cell_px + (cols + 1) * self.gap_px;
        let height = rows * (self.cell_px + self.caption_px) + (rows + 1) * self.gap_px;
        (width, height)
    }
}

/// One cell: an image at its own resolution, what to draw on it (in the
/// image's pixels), and a caption.
#[derive(Debug, Clone)]
pub struct Tile {
    pub image: RgbImage,
    pub annotations: Vec<Annotation>,
    pub caption: String,
}

/// Renders the first `layout.capacity()` tiles row by row; extra tiles are ignored.
pub fn render_grid(tiles: &[Tile], layout: &GridLayout) -> RgbImage {
    let (width, height) = layout.size_px();
    let mut canvas = RgbImage::from_pixel(width, height, BACKGROUND);
    for (index, tile) in tiles.iter().take(layout.capacity()).enumerate() {
        let (row, col) = ((index / layout.cols) as u32, (index % layout.cols) as u32);
        let x = layout.gap_px + col * (layout.cell_px + layout.gap_px);
        let y = layout.gap_px + row * (layout.cell_px + layout.caption_px + layout.gap_px);
        let cell = render_cell(tile, layout);
        imageops::replace(&mut canvas, &cell, i64::from(x), i64::from(y));
    }
    canvas
}

/// Height of the title strip [`render_grid_titled`] puts above a grid.
pub const TITLE_PX: u32 = 28;

/// [`render_grid`] under a strip with `title` (cut with an ellipsis where the
/// grid is narrower): for grids that are not simply the CSV's first rows,
/// so the picture says what it shows wherever it is looked at.
pub fn render_grid_titled(tiles: &[Tile], layout: &GridLayout, title: &str) -> RgbImage {
    let grid = render_grid(tiles, layout);
    let mut canvas = RgbImage::from_pixel(grid.width(), grid.height() + TITLE_PX, BACKGROUND);
    let style = TextStyle {
        color: WHITE,
        size_px: TITLE_PX as f32 * 0.65,
        outline_px: 0,
    };
    let x = i64::from(layout.gap_px);
    let text = fit_text(
        title,
        &style,
        grid.width().saturating_sub(2 * layout.gap_px),
    );
    let y = (i64::from(TITLE_PX) - i64::from(text_extent(&text, &style).1)) / 2 + 2;
    draw_text(&mut canvas, (x, y.max(0)), &text, &style);
    imageops::replace(&mut canvas, &grid, 0, i64::from(TITLE_PX));
    canvas
}

/// The image scaled to fit the cell, annotated, with the caption strip below.
fn render_cell(tile: &Tile, layout: &GridLayout) -> RgbImage {
    let cell = layout.cell_px;
    let mut out = RgbImage::from_pixel(cell, cell + layout.caption_px, BACKGROUND);
    let (w, h) = tile.image.dimensions();
    if w > 0 && h > 0 {
        let scale = (cell as f32 / w as f32).min(cell as f32 / h as f32);
        let (sw, sh) = (
            ((w as f32 * scale).round() as u32).clamp(1, cell),
            ((h as f32 * scale).round() as u32).clamp(1, cell),
        );
        let mut scaled = imageops::resize(&tile.image, sw, sh, imageops::FilterType::Triangle);
        let scaled_annotations: Vec<Annotation> = tile
            .annotations
            .iter()
            .map(|a| Annotation {
                bbox: a.bbox.map(|b| b.map(|v| v * scale)),
                ..a.clone()
            })
            .collect();
        draw_annotations(&mut scaled, &scaled_annotations, layout.label_px);
        // Centred across, at the bottom of the cell: the caption sits right under its image.
        imageops::replace(
            &mut out,
            &scaled,
            i64::from((cell - sw) / 2),
            i64::from(cell - sh),
        );
    }
    let caption_style = TextStyle {
        color: WHITE,
        size_px: (layout.caption_px as f32 * 0.7).max(8.0),
        outline_px: 0,
    };
    let caption = fit_text(&tile.caption, &caption_style, cell.saturating_sub(4));
    draw_text(&mut out, (2, i64::from(cell) + 2), &caption, &caption_style);
    out
}

/// `text`, cut with an ellipsis where it is wider than `max_width` pixels.
fn fit_text(text: &str, style: &TextStyle, max_width: u32) -> String {
    if text_extent(text, style).0 <= max_width {
        return text.to_string();
    }
    let chars: Vec<char> = text.chars().collect();
    (0..chars.len())
        .rev()
        .map(|keep| format!("{}…", chars[..keep].iter().collect::<String>()))
        .find(|candidate| text_extent(candidate, style).0 <= max_width)
        .unwrap_or_default()
}

/// Side of the square tile drawn in place of an unreadable image: the
/// default cell, so that it is drawn at its own resolution there.
pub const UNREADABLE_TILE_PX: u32 = 256;

/// The tile standing in for an unreadable image: crossed out, saying
/// `unreadable: <reason>`, nothing drawn on it, and the row's caption (which
/// names the file) below.
pub fn unreadable_tile(reason: &str, caption: impl Into<String>) -> Tile {
    Tile {
        image: unreadable_image(UNREADABLE_TILE_PX, UNREADABLE_TILE_PX, reason),
        annotations: Vec::new(),
        caption: caption.into(),
    }
}

/// The tile for `file_name`: its image with `annotations`, or, where the
/// image is unreadable and the policy is to skip it, [`unreadable_tile`].
fn tile(
    images: &mut ImageOpener,
    file_name: &str,
    annotations: Vec<Annotation>,
    caption: String,
) -> Result<Tile> {
    Ok(match images.open(file_name)? {
        Ok(image) => Tile {
            image,
            annotations,
            caption,
        },
        Err(reason) => unreadable_tile(&reason, caption),
    })
}

/// Tiles for a bbox predictions CSV: prediction in white, ground truth in green, IoU in the caption.
pub fn bbox_prediction_tiles(
    predictions: &[BboxPrediction],
    images: &mut ImageOpener,
) -> Result<Vec<Tile>> {
    predictions
        .iter()
        .map(|p| {
            tile(
                images,
                &p.file_name,
                vec![
                    Annotation::bare_box(p.true_bbox, GROUND_TRUTH_COLOR),
                    Annotation::bare_box(p.bbox, PREDICTION_COLOR),
                ],
                format!("{}  IoU {:.2}", p.file_name, p.iou),
            )
        })
        .collect()
}

/// Tiles for a class predictions CSV: predicted class and probability in white, true class in green.
pub fn class_prediction_tiles(
    predictions: &[ClassPrediction],
    images: &mut ImageOpener,
) -> Result<Vec<Tile>> {
    predictions
        .iter()
        .map(|p| {
            let verdict = verdict(&p.category, &p.true_category);
            tile(
                images,
                &p.file_name,
                vec![
                    Annotation::label(format!("{} {:.2}", p.category, p.prob), PREDICTION_COLOR),
                    Annotation::label(format!("true: {}", p.true_category), GROUND_TRUTH_COLOR),
                ],
                format!("{}  {verdict}", p.file_name),
            )
        })
        .collect()
}

/// `right` or `WRONG`, for captions of class predictions.
fn verdict(category: &str, true_category: &str) -> &'static str {
    if category == true_category {
        "right"
    } else {
        "WRONG"
    }
}

/// Tiles for a combined (class and box) predictions CSV: the true box in green
/// with the true class, the predicted box in white with the predicted class and
/// its probability, IoU and right/WRONG (the class) in the caption.
pub fn combined_prediction_tiles(
    predictions: &[CombinedPrediction],
    images: &mut ImageOpener,
) -> Result<Vec<Tile>> {
    predictions
        .iter()
        .map(|p| {
            tile(
                images,
                &p.file_name,
                // Truth first: its box is drawn under the prediction's, and where
                // the two labels would meet, the prediction's moves below it.
                vec![
                    Annotation::labelled_box(
                        p.true_bbox,
                        format!("true: {}", p.true_category),
                        GROUND_TRUTH_COLOR,
                    ),
                    Annotation::labelled_box(
                        p.bbox,
                        format!("{} {:.2}", p.category, p.prob),
                        PREDICTION_COLOR,
                    ),
                ],
                format!(
                    "{}  IoU {:.2}  {}",
                    p.file_name,
                    p.iou,
                    verdict(&p.category, &p.true_category)
                ),
            )
        })
        .collect()
}

/// Tiles for lrg_bb.csv rows: the largest object's box, labelled with its class.
pub fn lrg_bb_tiles(rows: &[LrgBbRow], images: &mut ImageOpener) -> Result<Vec<Tile>> {
    rows.iter()
        .map(|row| {
            let [top, left, bottom, right] = row.bbox;
            tile(
                images,
                &row.file_name,
                vec![Annotation::labelled_box(
                    row.bbox,
                    row.category.clone(),
                    PREDICTION_COLOR,
                )],
                format!("{}  {}x{}", row.file_name, right - left, bottom - top),
            )
        })
        .collect()
}

/// Tiles for bb.csv rows: the largest object's box.
pub fn bb_tiles(rows: &[BbRow], images: &mut ImageOpener) -> Result<Vec<Tile>> {
    rows.iter()
        .map(|row| {
            let [top, left, bottom, right] = row.bbox;
            tile(
                images,
                &row.file_name,
                vec![Annotation::bare_box(row.bbox, PREDICTION_COLOR)],
                format!("{}  {}x{}", row.file_name, right - left, bottom - top),
            )
        })
        .collect()
}

/// One image's objects to draw: boxes with their labels (empty for none).
#[derive(Debug, Clone, PartialEq)]
pub struct ObjectsRow {
    pub file_name: String,
    pub objects: Vec<([f32; 4], String)>,
    pub caption: String,
}

/// Tiles with every object of an image (mbb.csv, a detector's detections): each
/// box with its label, colours cycling so that neighbours can be told apart
/// (the lesson's `show_ground_truth`).
pub fn object_tiles(rows: &[ObjectsRow], images: &mut ImageOpener) -> Result<Vec<Tile>> {
    rows.iter()
        .map(|row| {
            let annotations = row
                .objects
                .iter()
                .enumerate()
                .map(|(i, (bbox, label))| {
                    let color = OBJECT_COLORS[i % OBJECT_COLORS.len()];
                    if label.is_empty() {
                        Annotation::bare_box(*bbox, color)
                    } else {
                        Annotation::labelled_box(*bbox, label.clone(), color)
                    }
                })
                .collect();
            tile(images, &row.file_name, annotations, row.caption.clone())
        })
        .collect()
}

/// Distinct, bright colours for the objects of one image.
const OBJECT_COLORS: [Rgb<u8>; 8] = [
    Rgb([255, 255, 255]),
    Rgb([255, 200, 0]),
    Rgb([0, 220, 255]),
    Rgb([120, 255, 80]),
    Rgb([255, 90, 200]),
    Rgb([255, 120, 60]),
    Rgb([170, 140, 255]),
    Rgb([255, 255, 120]),
];

/// Tiles for lrg.csv rows: the largest object's class at the top-left corner.
pub fn lrg_tiles(rows: &[LrgRow], images: &mut ImageOpener) -> Result<Vec<Tile>> {
    rows.iter()
        .map(|row| {
            tile(
                images,
                &row.file_name,
                vec![Annotation::label(row.category.clone(), PREDICTION_COLOR)],
                row.file_name.clone(),
            )
        })
        .collect()
}

fn write_grid(tiles: &[Tile], layout: &GridLayout, out: &Path) -> Result<()> {
    save_png(&render_grid(tiles, layout), out)
}

fn first<T>(rows: Vec<T>, count: usize, path: &Path) -> Result<Vec<T>> {
    if rows.is_empty() {
        return Err(VizError::invalid(path, "no rows to draw"));
    }
    Ok(rows.into_iter().take(count).collect())
}

/// The one way every grid is made: the first `layout.capacity()` rows of
/// `csv`, their images opened under `on_bad_image`, drawn by `tiles`.
fn rows_grid<R>(
    rows: Vec<R>,
    csv: &Path,
    images_dir: &Path,
    layout: &GridLayout,
    out: &Path,
    on_bad_image: OnBadImage,
    tiles: fn(&[R], &mut ImageOpener) -> Result<Vec<Tile>>,
) -> Result<DrawSummary> {
    let rows = first(rows, layout.capacity(), csv)?;
    let mut images = ImageOpener::new(images_dir, csv, on_bad_image);
    write_grid(&tiles(&rows, &mut images)?, layout, out)?;
    Ok(images.into_summary())
}

/// The lesson's prediction grid for the bbox model: the first `layout.capacity()` rows.
pub fn bbox_prediction_grid(
    predictions_csv: &Path,
    images_dir: &Path,
    layout: &GridLayout,
    out: &Path,
    on_bad_image: OnBadImage,
) -> Result<DrawSummary> {
    let rows = read_bbox_predictions(predictions_csv)?;
    let (csv, tiles) = (predictions_csv, bbox_prediction_tiles);
    rows_grid(rows, csv, images_dir, layout, out, on_bad_image, tiles)
}

/// The lesson's prediction grid for the classifier: the first `layout.capacity()` rows.
pub fn class_prediction_grid(
    predictions_csv: &Path,
    images_dir: &Path,
    layout: &GridLayout,
    out: &Path,
    on_bad_image: OnBadImage,
) -> Result<DrawSummary> {
    let rows = read_class_predictions(predictions_csv)?;
    let (csv, tiles) = (predictions_csv, class_prediction_tiles);
    rows_grid(rows, csv, images_dir, layout, out, on_bad_image, tiles)
}

/// The first `layout.capacity()` boxes of bb.csv on their images.
pub fn bb_grid(
    bb_csv: &Path,
    images_dir: &Path,
    layout: &GridLayout,
    out: &Path,
    on_bad_image: OnBadImage,
) -> Result<DrawSummary> {
    let rows = csv_export::read_bb(bb_csv)?;
    rows_grid(
        rows,
        bb_csv,
        images_dir,
        layout,
        out,
        on_bad_image,
        bb_tiles,
    )
}

/// The first `layout.capacity()` classes of lrg.csv on their images.
pub fn lrg_grid(
    lrg_csv: &Path,
    images_dir: &Path,
    layout: &GridLayout,
    out: &Path,
    on_bad_image: OnBadImage,
) -> Result<DrawSummary> {
    let rows = csv_export::read_lrg(lrg_csv)?;
    rows_grid(
        rows,
        lrg_csv,
        images_dir,
        layout,
        out,
        on_bad_image,
        lrg_tiles,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::draw::BLACK;
    use crate::test_support::{png_size, write_jpeg};

    #[test]
    fn layout_sizes() {
        let layout = GridLayout::default();
        assert_eq!((layout.rows, layout.cols, layout.capacity()), (3, 4, 12));
        assert_eq!(layout.size_px(), (4 * 256 + 5 * 6, 3 * (256 + 22) + 4 * 6));
        let five = GridLayout::for_count(5, 4);
        assert_eq!((five.rows, five.cols), (2, 4));
        let two = GridLayout::for_count(2, 4);
        assert_eq!((two.rows, two.cols), (1, 2));
    }

    #[test]
    fn boxes_are_scaled_into_their_cell() {
        // A 512x256 image in a 256 px cell is halved and sits at the cell's bottom (128 px band above).
        let layout = GridLayout {
            rows: 1,
            cols: 1,
            cell_px: 256,
            caption_px: 20,
            gap_px: 0,
            label_px: 12.0,
        };
        let tile = Tile {
            image: RgbImage::from_pixel(512, 256, Rgb([128, 128, 128])),
            annotations: vec![Annotation::bare_box([40.0, 100.0, 200.0, 400.0], WHITE)],
            caption: "caption".into(),
        };
        let grid = render_grid(&[tile], &layout);
        assert_eq!(grid.dimensions(), (256, 276));
        // Box top edge at 40/2 + 128 = 148, left edge at 50: white on it, black just outside.
        assert_eq!(*grid.get_pixel(120, 148), WHITE);
        assert_eq!(*grid.get_pixel(120, 146), BLACK);
        assert_eq!(*grid.get_pixel(50, 180), WHITE);
        assert_eq!(*grid.get_pixel(48, 180), BLACK);
        // The letterbox band above the image stays background; the caption has white text.
        assert_eq!(*grid.get_pixel(120, 100), BACKGROUND);
        assert!((256..276).any(|y| (0..256).any(|x| *grid.get_pixel(x, y) == WHITE)));
    }

    #[test]
    fn titled_grid_has_the_title_strip_above_the_grid() {
        let layout = GridLayout::for_count(1, 4);
        let tile = Tile {
            image: RgbImage::from_pixel(64, 64, Rgb([128, 128, 128])),
            annotations: Vec::new(),
            caption: String::new(),
        };
        let plain = render_grid(std::slice::from_ref(&tile), &layout);
        let titled =
            render_grid_titled(&[tile], &layout, "worst 1 of 9 rows by IoU (lowest first)");
        assert_eq!(
            titled.dimensions(),
            (plain.width(), plain.height() + TITLE_PX)
        );
        assert!(
            (0..TITLE_PX).any(|y| (0..titled.width()).any(|x| *titled.get_pixel(x, y) == WHITE))
        );
        // Below the strip, the grid is the untitled one.
        let below =
            imageops::crop_imm(&titled, 0, TITLE_PX, plain.width(), plain.height()).to_image();
        assert_eq!(below, plain);
    }

    #[test]
    fn prediction_grids_write_pngs_of_the_layout_size() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        write_jpeg(&images.join("a.jpg"), 200, 150);
        write_jpeg(&images.join("b.jpg"), 120, 240);
        let bbox_csv = dir.path().join("bbox.csv");
        std::fs::write(&bbox_csv, "fn,bbox,true_bbox,iou\na.jpg,10 10 100 150,12 8 110 140,0.8\nb.jpg,5 5 60 60,0 0 50 50,0.5\nmissing.jpg,1 1 9 9,1 1 9 9,1\n").unwrap();
        let class_csv = dir.path().join("class.csv");
        std::fs::write(
            &class_csv,
            "fn,cat,true_cat,prob\na.jpg,car,car,0.9\nb.jpg,dog,cat,0.4\n",
        )
        .unwrap();
        let layout = GridLayout {
            rows: 2,
            cols: 2,
            cell_px: 128,
            ..GridLayout::default()
        };
        let bbox_png = dir.path().join("out/bbox.png");
        let summary =
            bbox_prediction_grid(&bbox_csv, &images, &layout, &bbox_png, OnBadImage::Skip).unwrap();
        assert_eq!(
            summary.unreadable,
            vec![(images.join("missing.jpg"), "missing".to_owned())]
        );
        assert_eq!(png_size(&bbox_png), layout.size_px());
        let class_png = dir.path().join("class.png");
        class_prediction_grid(&class_csv, &images, &layout, &class_png, OnBadImage::Fail).unwrap();
        assert_eq!(png_size(&class_png), layout.size_px());

        // Ground truth in green and prediction in white both show in the bbox grid.
        let grid = image::open(&bbox_png).unwrap().into_rgb8();
        assert!(grid.pixels().any(|p| *p == GROUND_TRUTH_COLOR));
        assert!(grid.pixels().any(|p| *p == WHITE));
    }

    #[test]
    fn csv_grids_use_csv_export_rows() {
        let dir = tempfile::tempdir().unwrap();
        write_jpeg(&dir.path().join("a.jpg"), 100, 80);
        let bb = dir.path().join("bb.csv");
        csv_export::write_bb(
            &bb,
            &[BbRow {
                file_name: "a.jpg".into(),
                bbox: [10.0, 10.0, 70.0, 90.0],
            }],
        )
        .unwrap();
        let lrg = dir.path().join("lrg.csv");
        csv_export::write_lrg(
            &lrg,
            &[LrgRow {
                file_name: "a.jpg".into(),
                category: "horse".into(),
            }],
        )
        .unwrap();
        let layout = GridLayout::for_count(1, 4);
        for (draw, csv) in [
            (
                bb_grid as fn(&Path, &Path, &GridLayout, &Path, OnBadImage) -> Result<DrawSummary>,
                &bb,
            ),
            (lrg_grid, &lrg),
        ] {
            let out = dir.path().join("grid.png");
            draw(csv, dir.path(), &layout, &out, OnBadImage::Fail).unwrap();
            assert_eq!(png_size(&out), layout.size_px());
        }
        let empty = dir.path().join("empty.csv");
        std::fs::write(&empty, "fn,bbox\n").unwrap();
        let message = bb_grid(
            &empty,
            dir.path(),
            &layout,
            &dir.path().join("x.png"),
            OnBadImage::Skip,
        )
        .unwrap_err()
        .to_string();
        assert!(message.contains("empty.csv"), "{message}");
    }
}
