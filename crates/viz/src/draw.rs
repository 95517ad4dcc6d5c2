//! The lesson's `draw_rect` / `draw_text` / `draw_outline` on an RGB image:
//! a coloured line over a wider black one, and bold text with a black stroke,
//! so both stay readable on any background.

use ab_glyph::{point, Font, FontRef, PxScale, ScaleFont};
use image::{GrayImage, Luma, Rgb, RgbImage};
use std::sync::OnceLock;

/// DejaVu Sans Bold (Bitstream Vera licence, see `assets/DejaVuSans-Bold.LICENSE`).
pub static FONT_BYTES: &[u8] = include_bytes!("../assets/DejaVuSans-Bold.ttf");

/// The embedded bold font, parsed once.
pub fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| {
        FontRef::try_from_slice(FONT_BYTES).expect("the embedded DejaVu Sans Bold parses")
    })
}

pub const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
pub const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
/// Predictions are drawn in the lesson's white.
pub const PREDICTION_COLOR: Rgb<u8> = WHITE;
/// Ground truth beside a prediction: a green that stays distinct from white.
pub const GROUND_TRUTH_COLOR: Rgb<u8> = Rgb([0, 230, 64]);

/// How a box is drawn: `line_px` of `color` centred on the box edge, over
/// `outline_px` of black (the lesson: lw=2 white over a lw=4 black stroke).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RectStyle {
    pub color: Rgb<u8>,
    pub line_px: u32,
    pub outline_px: u32,
}

impl RectStyle {
    pub fn lesson(color: Rgb<u8>) -> Self {
        RectStyle {
            color,
            line_px: 2,
            outline_px: 4,
        }
    }
}

impl Default for RectStyle {
    fn default() -> Self {
        RectStyle::lesson(PREDICTION_COLOR)
    }
}

/// How text is drawn: bold, `size_px` high (the font's line height), in
/// `color`, with an `outline_px` black stroke around every glyph.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TextStyle {
    pub color: Rgb<u8>,
    pub size_px: f32,
    pub outline_px: u32,
}

impl TextStyle {
    pub fn lesson(color: Rgb<u8>, size_px: f32) -> Self {
        TextStyle {
            color,
            size_px,
            outline_px: 1,
        }
    }
}

impl Default for TextStyle {
    fn default() -> Self {
        TextStyle::lesson(PREDICTION_COLOR, 16.0)
    }
}

/// Draws `bbox` (`[top, left, bottom, right]`, inclusive pixels) in the
/// lesson's style: 2 px of `color` over a 4 px black outline.
pub fn draw_rect(image: &mut RgbImage, bbox: [f32; 4], color: Rgb<u8>) {
    draw_rect_styled(image, bbox, &RectStyle::lesson(color));
}

/// Draws `bbox` with an explicit style. A line of width `w` covers `w / 2`
/// pixels outside the edge and the rest on and inside it, so the black outline
/// shows on both sides of the coloured line. Parts outside the image are clipped.
pub fn draw_rect_styled(image: &mut RgbImage, bbox: [f32; 4], style: &RectStyle) {
    let [top, left, bottom, right] = bbox.map(|v| v.round() as i64);
    // An inverted box (a prediction can be one) is drawn as the rectangle it spans.
    let (top, bottom) = (top.min(bottom), top.max(bottom));
    let (left, right) = (left.min(right), left.max(right));
    if style.outline_px > 0 {
        fill_frame(image, [top, left, bottom, right], style.outline_px, BLACK);
    }
    if style.line_px > 0 {
        fill_frame(
            image,
            [top, left, bottom, right],
            style.line_px,
            style.color,
        );
    }
}

/// Fills the band of width `width` centred on the edge of `[top, left, bottom, right]`.
fn fill_frame(image: &mut RgbImage, edge: [i64; 4], width: u32, color: Rgb<u8>) {
    let [top, left, bottom, right] = edge;
    let outside = i64::from(width / 2);
    let inside = i64::from(width) - outside - 1;
    let (outer_top, outer_left) = (top - outside, left - outside);
    let (outer_bottom, outer_right) = (bottom + outside, right + outside);
    // Pixels strictly inside this rectangle keep their colour.
    let (inner_top, inner_left) = (top + inside, left + inside);
    let (inner_bottom, inner_right) = (bottom - inside, right - inside);
    let (width_px, height_px) = (i64::from(image.width()), i64::from(image.height()));
    for y in outer_top.max(0)..=outer_bottom.min(height_px - 1) {
        let row_in_band = y <= inner_top || y >= inner_bottom;
        for x in outer_left.max(0)..=outer_right.min(width_px - 1) {
            if row_in_band || x <= inner_left || x >= inner_right {
                image.put_pixel(x as u32, y as u32, color);
            }
        }
    }
}

/// Text rasterised to coverage masks: the glyphs, and the glyphs grown by the
/// stroke width. `origin` is where the mask's (0, 0) lands relative to the
/// requested top-left corner.
struct TextMasks {
    glyphs: GrayImage,
    stroke: GrayImage,
    origin: (i64, i64),
}

/// Width and height in pixels of `text` as `draw_text` lays it out (line
/// height, not ink height), stroke included.
pub fn text_extent(text: &str, style: &TextStyle) -> (u32, u32) {
    let masks = rasterise(text, style);
    (masks.glyphs.width(), masks.glyphs.height())
}

fn rasterise(text: &str, style: &TextStyle) -> TextMasks {
    let font = font();
    let scale = PxScale::from(style.size_px);
    let scaled = font.as_scaled(scale);
    let pad = i64::from(style.outline_px);
    let mut caret = 0.0f32;
    let mut previous = None;
    let mut outlines = Vec::new();
    for c in text.chars() {
        let glyph_id = scaled.glyph_id(c);
        if let Some(previous) = previous {
            caret += scaled.kern(previous, glyph_id);
        }
        previous = Some(glyph_id);
        // Baseline at `ascent`: the top of the line is y = 0 (matplotlib's va='top').
        let glyph = glyph_id.with_scale_and_position(scale, point(caret, scaled.ascent()));
        caret += scaled.h_advance(glyph_id);
        if let Some(outlined) = font.outline_glyph(glyph) {
            outlines.push(outlined);
        }
    }
    let width = caret.ceil().max(1.0) as i64 + 2 * pad;
    let height = scaled.height().ceil().max(1.0) as i64 + 2 * pad;
    let mut glyphs = GrayImage::new(width as u32, height as u32);
    for outlined in &outlines {
        let bounds = outlined.px_bounds();
        let (x0, y0) = (bounds.min.x as i64 + pad, bounds.min.y as i64 + pad);
        outlined.draw(|gx, gy, coverage| {
            let (x, y) = (x0 + i64::from(gx), y0 + i64::from(gy));
            if (0..width).contains(&x) && (0..height).contains(&y) {
                let pixel = glyphs.get_pixel_mut(x as u32, y as u32);
                let value = (coverage.clamp(0.0, 1.0) * 255.0).round() as u8;
                pixel.0[0] = pixel.0[0].max(value);
            }
        });
    }
    let stroke = if style.outline_px > 0 {
        // A grayscale dilation keeps the stroke antialiased like the glyphs;
        // doubling the coverage first makes half-covered edge pixels cast a
        // full stroke, so the ring stays dark instead of fading into the background.
        let radius = style.outline_px.min(u32::from(u8::MAX)) as u8;
        let boosted = GrayImage::from_fn(glyphs.width(), glyphs.height(), |x, y| {
            Luma([glyphs.get_pixel(x, y).0[0].saturating_mul(2)])
        });
        imageproc::morphology::grayscale_dilate(
            &boosted,
            &imageproc::morphology::Mask::square(radius),
        )
    } else {
        GrayImage::new(glyphs.width(), glyphs.height())
    };
    TextMasks {
        glyphs,
        stroke,
        origin: (-pad, -pad),
    }
}

/// Antialiased coverage of `text` without stroke, the line's top at row 0 and
/// its height `size_px` (ascent to descent): the plots' text renderer.
pub(crate) fn text_coverage(text: &str, size_px: f32) -> GrayImage {
    rasterise(
        text,
        &TextStyle {
            color: WHITE,
            size_px,
            outline_px: 0,
        },
    )
    .glyphs
}

/// Draws `text` with its line's top-left corner at `(x, y)` (the lesson's
/// `draw_text(ax, xy, txt)` with `verticalalignment='top'`), bold, with a
/// black stroke. Returns the `(width, height)` it covers, stroke included.
pub fn draw_text(
    image: &mut RgbImage,
    (x, y): (i64, i64),
    text: &str,
    style: &TextStyle,
) -> (u32, u32) {
    let masks = rasterise(text, style);
    let (ox, oy) = (x + masks.origin.0, y + masks.origin.1);
    for (mx, my, Luma([stroke])) in masks.stroke.enumerate_pixels() {
        let (px, py) = (ox + i64::from(mx), oy + i64::from(my));
        if px < 0 || py < 0 || px >= i64::from(image.width()) || py >= i64::from(image.height()) {
            continue;
        }
        let glyph = masks.glyphs.get_pixel(mx, my).0[0];
        if *stroke == 0 && glyph == 0 {
            continue;
        }
        let pixel = image.get_pixel_mut(px as u32, py as u32);
        *pixel = blend(*pixel, BLACK, *stroke);
        *pixel = blend(*pixel, style.color, glyph);
    }
    (masks.glyphs.width(), masks.glyphs.height())
}

fn blend(under: Rgb<u8>, over: Rgb<u8>, alpha: u8) -> Rgb<u8> {
    let a = u16::from(alpha);
    Rgb(std::array::from_fn(|i| {
        ((u16::from(under.0[i]) * (255 - a) + u16::from(over.0[i]) * a + 127) / 255) as u8
    }))
}

/// One thing to draw on an image: a box, a label, or a labelled box.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    /// `[top, left, bottom, right]` in the image's pixels.
    pub bbox: Option<[f32; 4]>,
    pub label: Option<String>,
    pub color: Rgb<u8>,
}

impl Annotation {
    pub fn labelled_box(bbox: [f32; 4], label: impl Into<String>, color: Rgb<u8>) -> Self {
        Annotation {
            bbox: Some(bbox),
            label: Some(label.into()),
            color,
        }
    }
    pub fn bare_box(bbox: [f32; 4], color: Rgb<u8>) -> Self {
        Annotation {
            bbox: Some(bbox),
            label: None,
            color,
        }
    }
    pub fn label(label: impl Into<String>, color: Rgb<u8>) -> Self {
        Annotation {
            bbox: None,
            label: Some(label.into()),
            color,
        }
    }
}

/// Draws annotations the lesson's way: every box first, then each box's label
/// at its top-left corner, then labels without a box stacked from the image's
/// top-left corner (the classification grid's `draw_text(ax, (0,0), cat)`).
/// A label that would cover one drawn before it moves down below that one
/// (a prediction's box near the truth's would otherwise write its class over
/// the true class).
pub fn draw_annotations(image: &mut RgbImage, annotations: &[Annotation], text_size_px: f32) {
    for annotation in annotations {
        if let Some(bbox) = annotation.bbox {
            draw_rect(image, bbox, annotation.color);
        }
    }
    let mut free_label_y = 0i64;
    // `[x0, y0, x1, y1)` of each label drawn so far.
    let mut taken: Vec<[i64; 4]> = Vec::new();
    for annotation in annotations {
        let Some(label) = &annotation.label else {
            continue;
        };
        let style = TextStyle::lesson(annotation.color, text_size_px);
        let wanted = match annotation.bbox {
            Some([top, left, _, _]) => (left.round() as i64, top.round() as i64),
            None => (2, free_label_y + 1),
        };
        let (width, height) = text_extent(label, &style);
        let (x, y) = free_spot(wanted, (i64::from(width), i64::from(height)), &taken);
        draw_text(image, (x, y), label, &style);
        taken.push([x, y, x + i64::from(width), y + i64::from(height)]);
        if annotation.bbox.is_none() {
            free_label_y = y + i64::from(height) - 1;
        }
    }
}

/// `wanted`, or the first place straight below it where a `size` label covers
/// none of `taken`. Each step moves below one taken label, so it ends within
/// `taken.len()` steps.
fn free_spot(wanted: (i64, i64), size: (i64, i64), taken: &[[i64; 4]]) -> (i64, i64) {
    let (x, mut y) = wanted;
    let (width, height) = size;
    while let Some(hit) = taken
        .iter()
        .find(|[x0, y0, x1, y1]| x < *x1 && *x0 < x + width && y < *y1 && *y0 < y + height)
    {
        y = hit[3];
    }
    (x, y)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRAY: Rgb<u8> = Rgb([128, 128, 128]);
    const BLUE: Rgb<u8> = Rgb([30, 90, 200]);

    #[test]
    fn rect_is_white_on_the_edge_with_black_on_both_sides() {
        let mut image = RgbImage::from_pixel(120, 100, GRAY);
        draw_rect(&mut image, [20.0, 30.0, 60.0, 90.0], WHITE);
        // (row, column, expected) across the top edge at column 50.
        let top_edge = [
            (16, GRAY),
            (17, GRAY),
            (18, BLACK),
            (19, WHITE),
            (20, WHITE),
            (21, BLACK),
            (22, GRAY),
        ];
        for (y, expected) in top_edge {
            assert_eq!(*image.get_pixel(50, y), expected, "top edge, row {y}");
        }
        // Across the bottom edge the band is mirrored: white on and below the edge.
        let bottom_edge = [
            (58, GRAY),
            (59, BLACK),
            (60, WHITE),
            (61, WHITE),
            (62, BLACK),
            (63, GRAY),
        ];
        for (y, expected) in bottom_edge {
            assert_eq!(*image.get_pixel(50, y), expected, "bottom edge, row {y}");
        }
        let left_edge = [
            (27, GRAY),
            (28, BLACK),
            (29, WHITE),
            (30, WHITE),
            (31, BLACK),
            (32, GRAY),
        ];
        for (x, expected) in left_edge {
            assert_eq!(*image.get_pixel(x, 40), expected, "left edge, column {x}");
        }
        let right_edge = [
            (88, GRAY),
            (89, BLACK),
            (90, WHITE),
            (91, WHITE),
            (92, BLACK),
            (93, GRAY),
        ];
        for (x, expected) in right_edge {
            assert_eq!(*image.get_pixel(x, 40), expected, "right edge, column {x}");
        }
        // Inside and outside the box nothing changed.
        assert_eq!(*image.get_pixel(60, 40), GRAY);
        assert_eq!(*image.get_pixel(5, 5), GRAY);
    }

    #[test]
    fn inverted_box_is_drawn_as_the_rectangle_it_spans() {
        let mut straight = RgbImage::from_pixel(60, 60, GRAY);
        let mut inverted = straight.clone();
        draw_rect(&mut straight, [10.0, 12.0, 40.0, 50.0], WHITE);
        draw_rect(&mut inverted, [40.0, 50.0, 10.0, 12.0], WHITE);
        assert_eq!(straight, inverted);
    }

    #[test]
    fn rect_colour_is_configurable_and_clipped_at_the_border() {
        let mut image = RgbImage::from_pixel(50, 40, GRAY);
        draw_rect(&mut image, [-10.0, -10.0, 20.0, 70.0], GROUND_TRUTH_COLOR);
        assert_eq!(*image.get_pixel(25, 20), GROUND_TRUTH_COLOR);
        assert_eq!(*image.get_pixel(25, 22), BLACK);
        assert_eq!(*image.get_pixel(25, 23), GRAY);
        assert_eq!(*image.get_pixel(25, 10), GRAY);
    }

    #[test]
    fn text_is_white_inside_a_black_stroke_within_its_extent() {
        // Blue, because a grey could equal an antialiased white-over-black pixel.
        let mut image = RgbImage::from_pixel(200, 60, BLUE);
        let style = TextStyle::lesson(WHITE, 20.0);
        let (width, height) = draw_text(&mut image, (10, 12), "person", &style);
        assert!(width > 40 && height >= 20, "extent {width}x{height}");
        let mut white = 0;
        let mut dark = 0;
        for (x, y, pixel) in image.enumerate_pixels() {
            let inside = (9..10 + width).contains(&x) && (11..12 + height).contains(&y);
            if *pixel != BLUE {
                assert!(inside, "pixel ({x}, {y}) changed outside the text extent");
            }
            if *pixel == WHITE {
                white += 1;
                // Every fully white glyph pixel has no gray neighbour: the stroke surrounds it.
                for (dx, dy) in [(-1i64, 0i64), (1, 0), (0, -1), (0, 1)] {
                    let neighbour = image.get_pixel((x as i64 + dx) as u32, (y as i64 + dy) as u32);
                    assert_ne!(
                        *neighbour, BLUE,
                        "white pixel ({x}, {y}) touches the background"
                    );
                }
            }
            if pixel.0.iter().all(|&c| c < 40) {
                dark += 1;
            }
        }
        assert!(white > 50, "only {white} white text pixels");
        assert!(dark > 50, "only {dark} dark stroke pixels");
        // Top-aligned: ink starts within the line's first third, and not above it.
        let first_ink_row = (0..60)
            .find(|&y| (0..200).any(|x| *image.get_pixel(x, y) != BLUE))
            .unwrap();
        assert!(
            (11..12 + height / 3).contains(&first_ink_row),
            "first ink row {first_ink_row}"
        );
    }

    #[test]
    fn text_colour_is_configurable() {
        let mut image = RgbImage::from_pixel(120, 40, Rgb([0, 0, 255]));
        draw_text(
            &mut image,
            (0, 0),
            "horse",
            &TextStyle::lesson(GROUND_TRUTH_COLOR, 18.0),
        );
        assert!(image.pixels().any(|p| *p == GROUND_TRUTH_COLOR));
        assert!(!image.pixels().any(|p| *p == WHITE));
    }

    #[test]
    fn a_label_that_would_cover_another_moves_below_it() {
        // Two boxes with nearly the same corner, as a good prediction beside its truth.
        let (truth, predicted) = ([40.0, 50.0, 120.0, 180.0], [42.0, 52.0, 118.0, 178.0]);
        let mut image = RgbImage::from_pixel(200, 150, BLUE);
        let annotations = [
            Annotation::labelled_box(truth, "true: cat", GROUND_TRUTH_COLOR),
            Annotation::labelled_box(predicted, "cat 0.93", WHITE),
        ];
        draw_annotations(&mut image, &annotations, 16.0);
        // The same boxes without labels: what differs is text.
        let mut boxes = RgbImage::from_pixel(200, 150, BLUE);
        draw_rect(&mut boxes, truth, GROUND_TRUTH_COLOR);
        draw_rect(&mut boxes, predicted, WHITE);
        let text_rows = |color: Rgb<u8>| -> Vec<u32> {
            (0..150)
                .filter(|&y| {
                    (0..200)
                        .any(|x| *image.get_pixel(x, y) == color && *boxes.get_pixel(x, y) != color)
                })
                .collect()
        };
        let (_, height) = text_extent("true: cat", &TextStyle::lesson(WHITE, 16.0));
        let first_line = 40..40 + height;
        let (green, white) = (text_rows(GROUND_TRUTH_COLOR), text_rows(WHITE));
        assert!(
            !green.is_empty() && green.iter().all(|y| first_line.contains(y)),
            "{green:?}"
        );
        assert!(
            !white.is_empty() && white.iter().all(|&y| y >= first_line.end),
            "white text rows {white:?} overlap the first label's line {first_line:?}"
        );
    }

    #[test]
    fn labelled_box_puts_the_label_inside_the_box_corner() {
        let mut image = RgbImage::from_pixel(200, 150, GRAY);
        let annotation = Annotation::labelled_box([40.0, 50.0, 120.0, 180.0], "horse", WHITE);
        draw_annotations(&mut image, &[annotation], 16.0);
        // The label's ink lies right of and below the box's top-left corner.
        let label_white = (52..120)
            .flat_map(|x| (42..62).map(move |y| (x, y)))
            .filter(|&(x, y)| *image.get_pixel(x, y) == WHITE)
            .count();
        assert!(
            label_white > 30,
            "{label_white} white label pixels near the corner"
        );
    }
}
