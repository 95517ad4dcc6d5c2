//! viz: the lesson's pictures, as PNG files and one offline HTML report.
//!
//! - [`draw`]: boxes and bold labels with black outlines (`draw_rect`, `draw_text`).
//! - [`grid`]: R x C grids of annotated images, from the prediction CSVs or bb.csv / lrg.csv.
//! - [`plot`]: the lr_find curve and per-epoch losses and metrics (plotters, embedded font).
//! - [`predictions`]: a model's answers on a user's images (`cargo xtask predict`).
//! - [`report`]: `report.html` for a pipeline run, pictures embedded.
//! - [`artifacts`]: readers for the CSV/JSON artifacts the training stages write.
//! - [`inspect`]: the summaries behind `cargo xtask show`.
//! - [`order`]: which rows a grid draws: the first ones, or the worst predictions.
//! - [`images`]: opening the dataset's images, with one policy ([`OnBadImage`])
//!   for unreadable ones: a warning, a count in the returned [`DrawSummary`]
//!   and a tile that says so, or an error.
//!
//! viz never links libtorch: it reads only files.

pub mod artifacts;
pub mod draw;
pub mod grid;
pub mod images;
pub mod inspect;
pub mod order;
pub mod plot;
pub mod predictions;
pub mod report;

pub use draw::{
    draw_annotations, draw_rect, draw_rect_styled, draw_text, Annotation, RectStyle, TextStyle,
    GROUND_TRUTH_COLOR, PREDICTION_COLOR,
};
pub use grid::{GridLayout, Tile};
/// The image crate viz draws on, for callers that build `RgbImage`s.
pub use image;
pub use images::{
    read_image, read_image_as_viewed, unreadable_image, DrawSummary, ImageOpener, OnBadImage,
};
pub use report::{write_report, RunReport, StageReport, StageState};

use image::RgbImage;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum VizError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: cannot decode image: {source}")]
    Image {
        path: PathBuf,
        source: image::ImageError,
    },
    #[error("{path}: unreadable image ({reason}), named in {named_in}")]
    UnreadableImage {
        path: PathBuf,
        reason: String,
        named_in: PathBuf,
    },
    #[error("{path}: line {line}: {message}")]
    Parse {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(transparent)]
    Csv(#[from] csv_export::CsvError),
    #[error(transparent)]
    Annotations(#[from] voc_annotations::AnnotationError),
    #[error("plot {path}: {message}")]
    Plot { path: PathBuf, message: String },
}

impl VizError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        VizError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
    pub(crate) fn invalid(path: &Path, message: impl Into<String>) -> Self {
        VizError::Invalid {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = VizError> = std::result::Result<T, E>;

/// Encodes `image` as PNG and writes it atomically (never a half-written file).
pub fn save_png(image: &RgbImage, path: &Path) -> Result<()> {
    let mut encoded = Vec::new();
    image
        .write_to(
            &mut std::io::Cursor::new(&mut encoded),
            image::ImageFormat::Png,
        )
        .map_err(|source| VizError::Image {
            path: path.to_path_buf(),
            source,
        })?;
    write_bytes_atomic(path, &encoded)
}

pub(crate) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    csv_export::write_bytes_atomic(path, bytes).map_err(|e| VizError::io(path, e))
}

/// Opens an image file as RGB, naming the file on failure.
pub fn open_rgb(path: &Path) -> Result<RgbImage> {
    let image = image::open(path).map_err(|source| match source {
        image::ImageError::IoError(e) => VizError::io(path, e),
        source => VizError::Image {
            path: path.to_path_buf(),
            source,
        },
    })?;
    Ok(image.into_rgb8())
}

#[cfg(test)]
pub(crate) mod test_support {
    use image::{Rgb, RgbImage};
    use std::path::{Path, PathBuf};

    /// Writes `text` to `dir/name` and returns the path.
    pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    /// A small JPEG with a smooth gradient, so drawn pixels stand out.
    pub fn write_jpeg(path: &Path, width: u32, height: u32) {
        let image = RgbImage::from_fn(width, height, |x, y| {
            Rgb([(x * 255 / width) as u8, (y * 255 / height) as u8, 90])
        });
        image.save(path).unwrap();
    }

    pub fn png_size(path: &Path) -> (u32, u32) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(
            &bytes[..8],
            b"\x89PNG\r\n\x1a\n",
            "{} is not a PNG",
            path.display()
        );
        let image = image::load_from_memory_with_format(&bytes, image::ImageFormat::Png).unwrap();
        (image.width(), image.height())
    }
}
