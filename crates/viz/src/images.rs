//! Opening the dataset images a picture is drawn from, with one policy for
//! images that cannot be read (a missing, empty or garbage file).
//!
//! Every viz function that opens a dataset image goes through [`ImageOpener`]:
//!
//! * the file name is checked by [`csv_export::ImagesDir`] (the project's one
//!   check that a name stays inside the images folder); a name that leads
//!   out of it is always an error naming the source file and the name;
//! * an unreadable image, under [`OnBadImage::Skip`] (the default), is named
//!   in a `tracing` warning with the reason, counted in the [`DrawSummary`]
//!   the drawing function returns, and drawn as a tile that says so
//!   ([`unreadable_image`]: a dark tile, a red X, "unreadable: <reason>");
//!   under [`OnBadImage::Fail`] it is an error naming the file and the reason.

use crate::draw::{draw_text, text_extent, TextStyle, WHITE};
use crate::{Result, VizError};
use csv_export::ImagesDir;
use image::{Rgb, RgbImage};
use std::path::{Path, PathBuf};

/// What drawing does with an image it cannot read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OnBadImage {
    /// Fail with an error naming the file and the reason.
    Fail,
    /// Warn, count it in the returned [`DrawSummary`], and draw a tile
    /// saying it is unreadable and why in its place.
    #[default]
    Skip,
}

impl std::str::FromStr for OnBadImage {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fail" => Ok(OnBadImage::Fail),
            "skip" => Ok(OnBadImage::Skip),
            other => Err(format!(
                "on_bad_image must be \"fail\" or \"skip\", not {other:?}"
            )),
        }
    }
}

/// What a drawing function met on its way, for the caller's summary.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrawSummary {
    /// Images that could not be read and were drawn as marked tiles, with why.
    pub unreadable: Vec<(PathBuf, String)>,
}

impl DrawSummary {
    /// `"; 2 unreadable images drawn as marked tiles (a.jpg: missing, ...)"`,
    /// or empty when every image was read.
    pub fn note(&self) -> String {
        match self.unreadable.len() {
            0 => String::new(),
            n => {
                let shown: Vec<String> = self
                    .unreadable
                    .iter()
                    .take(3)
                    .map(|(path, reason)| format!("{}: {reason}", path.display()))
                    .collect();
                let more = if n > 3 { ", ..." } else { "" };
                let (images, tiles) = if n == 1 {
                    ("image", "a marked tile")
                } else {
                    ("images", "marked tiles")
                };
                format!(
                    "; {n} unreadable {images} drawn as {tiles} ({}{more})",
                    shown.join(", ")
                )
            }
        }
    }
}

/// Reads an image file as RGB, its pixels as stored, or says in a few words why it
/// cannot. The dataset's boxes are in these pixels.
pub fn read_image(path: &Path) -> std::result::Result<RgbImage, String> {
    decode_image(path, false)
}

/// Reads an image file as RGB as a photo viewer shows it (EXIF orientation applied):
/// how a user's own photos are drawn.
pub fn read_image_as_viewed(path: &Path) -> std::result::Result<RgbImage, String> {
    decode_image(path, true)
}

fn decode_image(path: &Path, as_viewed: bool) -> std::result::Result<RgbImage, String> {
    use image::ImageDecoder;
    let file_len = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err("missing".into()),
        Err(e) => return Err(format!("cannot read: {e}")),
        Ok(m) if m.is_dir() => return Err("a folder, not a file".into()),
        Ok(m) if m.len() == 0 => return Err("empty file (0 bytes)".into()),
        Ok(m) => m.len(),
    };
    let reader = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| format!("cannot read: {e}"))?;
    let why = |e: image::ImageError| match e {
        image::ImageError::IoError(e) => format!("cannot read: {e}"),
        image::ImageError::Unsupported(_) => format!("not an image: {e}"),
        e => format!("cannot decode: {e}"),
    };
    let mut decoder = reader.into_decoder().map_err(why)?;
    let (width, height) = decoder.dimensions();
    augment::check_claimed_size(width, height, file_len)?;
    let orientation = if as_viewed {
        decoder.orientation().map_err(why)?
    } else {
        image::metadata::Orientation::NoTransforms
    };
    let mut image = augment::decoder_panic_as_error(|| {
        image::DynamicImage::from_decoder(decoder).map_err(why)
    })?;
    image.apply_orientation(orientation);
    Ok(image.into_rgb8())
}

/// Opens the images that the rows of one source (a CSV, an annotation file)
/// name, under one [`OnBadImage`] policy, and keeps the [`DrawSummary`].
#[derive(Debug)]
pub struct ImageOpener {
    images: ImagesDir,
    source: PathBuf,
    on_bad_image: OnBadImage,
    summary: DrawSummary,
}

impl ImageOpener {
    /// `source` is the file whose rows name the images, for error messages.
    pub fn new(images_dir: &Path, source: &Path, on_bad_image: OnBadImage) -> Self {
        ImageOpener {
            images: ImagesDir::new(images_dir),
            source: source.to_owned(),
            on_bad_image,
            summary: DrawSummary::default(),
        }
    }

    /// The image `file_name` names: `Ok(Ok(image))`, or `Ok(Err(reason))` for
    /// an unreadable one under [`OnBadImage::Skip`] (warned about and
    /// counted). An error under [`OnBadImage::Fail`], and always for a name
    /// leading out of the images folder.
    pub fn open(&mut self, file_name: &str) -> Result<std::result::Result<RgbImage, String>> {
        let path = self
            .images
            .path(file_name)
            .map_err(|e| VizError::invalid(&self.source, e.to_string()))?;
        match read_image(&path) {
            Ok(image) => Ok(Ok(image)),
            Err(reason) => match self.on_bad_image {
                OnBadImage::Fail => Err(VizError::UnreadableImage {
                    path,
                    reason,
                    named_in: self.source.clone(),
                }),
                OnBadImage::Skip => {
                    tracing::warn!(
                        "{}: unreadable image ({reason}), named in {}; drawn as a marked tile",
                        path.display(),
                        self.source.display()
                    );
                    self.summary.unreadable.push((path, reason.clone()));
                    Ok(Err(reason))
                }
            },
        }
    }

    /// What was met so far.
    pub fn summary(&self) -> &DrawSummary {
        &self.summary
    }

    pub fn into_summary(self) -> DrawSummary {
        self.summary
    }
}

const UNREADABLE_BACKGROUND: Rgb<u8> = Rgb([40, 40, 40]);
const UNREADABLE_CROSS: Rgb<u8> = Rgb([220, 40, 40]);

/// A `width` x `height` picture standing in for an image that cannot be
/// read: dark, crossed out in red, and saying `unreadable: <reason>` in the
/// lesson's outlined bold text, wrapped to fit.
pub fn unreadable_image(width: u32, height: u32, reason: &str) -> RgbImage {
    let (width, height) = (width.max(1), height.max(1));
    let mut image = RgbImage::from_pixel(width, height, UNREADABLE_BACKGROUND);
    let short = width.min(height) as f32;
    // The X: two antialiased diagonals, corner to corner.
    let half = (short / 40.0).max(1.5);
    let (w, h) = (width as f32, height as f32);
    let norm = (w * w + h * h).sqrt();
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
        let d1 = (h * px - w * py).abs() / norm;
        let d2 = (h * px + w * py - w * h).abs() / norm;
        let coverage = (half + 0.5 - d1.min(d2)).clamp(0.0, 1.0);
        if coverage > 0.0 {
            *pixel = mix(*pixel, UNREADABLE_CROSS, coverage);
        }
    }
    let style = TextStyle {
        outline_px: (short / 120.0).round().max(1.0) as u32,
        ..TextStyle::lesson(WHITE, (short / 13.0).clamp(10.0, 48.0))
    };
    let margin = (short / 20.0).round() as u32 + style.outline_px;
    let max_width = width.saturating_sub(2 * margin).max(1);
    let mut lines = vec!["unreadable:".to_owned()];
    lines.extend(wrap(reason, &style, max_width));
    let line_px = text_extent("Ag", &style).1.max(1);
    let max_lines = (height.saturating_sub(2 * margin) / line_px).max(1) as usize;
    if lines.len() > max_lines {
        lines.truncate(max_lines);
        let last = lines.last_mut().expect("at least one line");
        *last = fit(&format!("{last}…"), &style, max_width);
    }
    // The block of lines centred top to bottom, left-aligned at the margin.
    let block = line_px * lines.len() as u32;
    let mut y = i64::from(height.saturating_sub(block) / 2);
    for line in &lines {
        draw_text(&mut image, (i64::from(margin), y), line, &style);
        y += i64::from(line_px);
    }
    image
}

fn mix(under: Rgb<u8>, over: Rgb<u8>, amount: f32) -> Rgb<u8> {
    Rgb(std::array::from_fn(|i| {
        (f32::from(under.0[i]) * (1.0 - amount) + f32::from(over.0[i]) * amount).round() as u8
    }))
}

/// `text` in lines no wider than `max_width`: greedily by words, a word too
/// wide for a line of its own cut where it must.
fn wrap(text: &str, style: &TextStyle, max_width: u32) -> Vec<String> {
    let fits = |s: &str| text_extent(s, style).0 <= max_width;
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        let candidate = if line.is_empty() {
            word.to_owned()
        } else {
            format!("{line} {word}")
        };
        if fits(&candidate) {
            line = candidate;
            continue;
        }
        if !line.is_empty() {
            lines.push(std::mem::take(&mut line));
        }
        // The word alone: cut it into pieces that fit.
        let mut piece = String::new();
        for c in word.chars() {
            piece.push(c);
            if !fits(&piece) && piece.chars().count() > 1 {
                piece.pop();
                lines.push(std::mem::take(&mut piece));
                piece.push(c);
            }
        }
        line = piece;
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// `text` cut from the end (keeping a final `…`) until it fits.
fn fit(text: &str, style: &TextStyle, max_width: u32) -> String {
    let mut chars: Vec<char> = text.trim_end_matches('…').chars().collect();
    loop {
        let candidate = format!("{}…", chars.iter().collect::<String>());
        if chars.is_empty() || text_extent(&candidate, style).0 <= max_width {
            return candidate;
        }
        chars.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::write_jpeg;

    #[test]
    fn unreadable_files_give_a_short_reason() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty.jpg");
        std::fs::write(&empty, b"").unwrap();
        let garbage = dir.path().join("garbage.jpg");
        std::fs::write(&garbage, b"this is not a JPEG at all").unwrap();
        let good = dir.path().join("good.jpg");
        write_jpeg(&good, 40, 30);
        assert_eq!(read_image(&good).unwrap().dimensions(), (40, 30));
        assert_eq!(read_image(&empty).unwrap_err(), "empty file (0 bytes)");
        assert_eq!(
            read_image(&dir.path().join("nope.jpg")).unwrap_err(),
            "missing"
        );
        assert_eq!(read_image(dir.path()).unwrap_err(), "a folder, not a file");
        let reason = read_image(&garbage).unwrap_err();
        assert!(
            reason.starts_with("cannot decode") || reason.starts_with("not an image"),
            "{reason}"
        );
    }

    #[test]
    fn policy_reads_from_pipeline_text() {
        assert_eq!("skip".parse::<OnBadImage>(), Ok(OnBadImage::Skip));
        assert_eq!("fail".parse::<OnBadImage>(), Ok(OnBadImage::Fail));
        assert!("ignore"
            .parse::<OnBadImage>()
            .unwrap_err()
            .contains("ignore"));
        let from_json: OnBadImage = serde_json::from_str("\"fail\"").unwrap();
        assert_eq!(from_json, OnBadImage::Fail);
        assert_eq!(OnBadImage::default(), OnBadImage::Skip);
    }

    #[test]
    fn opener_skips_or_fails_and_refuses_names_outside() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        write_jpeg(&images.join("a.jpg"), 40, 30);
        std::fs::write(images.join("zero.jpg"), b"").unwrap();
        let csv = dir.path().join("bb.csv");

        let mut skip = ImageOpener::new(&images, &csv, OnBadImage::Skip);
        assert!(skip.open("a.jpg").unwrap().is_ok());
        assert_eq!(
            skip.open("zero.jpg").unwrap().unwrap_err(),
            "empty file (0 bytes)"
        );
        assert_eq!(
            skip.into_summary().unreadable,
            vec![(images.join("zero.jpg"), "empty file (0 bytes)".to_owned())]
        );

        let mut fail = ImageOpener::new(&images, &csv, OnBadImage::Fail);
        let message = fail.open("zero.jpg").unwrap_err().to_string();
        assert!(
            message.contains(&images.join("zero.jpg").display().to_string())
                && message.contains("empty file (0 bytes)")
                && message.contains("bb.csv"),
            "{message}"
        );

        // Out of the folder: an error under either policy, naming the source and the name.
        for policy in [OnBadImage::Skip, OnBadImage::Fail] {
            let mut opener = ImageOpener::new(&images, &csv, policy);
            let message = opener
                .open("../../../../etc/passwd")
                .unwrap_err()
                .to_string();
            assert!(
                message.starts_with(&csv.display().to_string())
                    && message.contains("\"../../../../etc/passwd\""),
                "{message}"
            );
        }
    }

    #[cfg(unix)]
    #[test]
    fn opener_refuses_a_symlink_out_of_the_images_folder() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir(&images).unwrap();
        write_jpeg(&dir.path().join("outside.jpg"), 40, 30);
        std::os::unix::fs::symlink(dir.path().join("outside.jpg"), images.join("link.jpg"))
            .unwrap();
        let csv = dir.path().join("bb.csv");
        let mut opener = ImageOpener::new(&images, &csv, OnBadImage::Skip);
        let message = opener.open("link.jpg").unwrap_err().to_string();
        assert!(
            message.starts_with(&csv.display().to_string())
                && message.contains("\"link.jpg\"")
                && message.contains("outside the images folder"),
            "{message}"
        );
    }

    #[test]
    fn unreadable_image_is_crossed_out_and_says_why() {
        let image = unreadable_image(256, 256, "cannot decode: Format error decoding Jpeg: invalid marker 0x12 at offset 4711, far too long for one line");
        assert_eq!(image.dimensions(), (256, 256));
        // The red X through the corners, white text in the middle band.
        assert_eq!(*image.get_pixel(3, 3), UNREADABLE_CROSS);
        assert_eq!(*image.get_pixel(252, 3), UNREADABLE_CROSS);
        assert_eq!(*image.get_pixel(128, 20), UNREADABLE_BACKGROUND);
        let white = image.pixels().filter(|p| **p == WHITE).count();
        assert!(white > 500, "{white} white text pixels");
        // Tiny sizes do not panic.
        assert_eq!(unreadable_image(0, 3, "missing").dimensions(), (1, 3));
    }
}
