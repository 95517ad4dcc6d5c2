//! Decoding and squashing: file -> RGB at (close to) the target size -> `size x size`.
//!
//! JPEGs decode with pure Rust crates, so nothing outside crates.io is needed
//! to build: zune-jpeg (SIMD inverse DCT and colour conversion) at full size,
//! and, for photos so large that 1/2, 1/4 or 1/8 of them still covers the
//! target, jpeg-decoder's reduced inverse DCT, which skips most of the work a
//! full decode would throw away in the squash. The VOC images (about
//! 500x375) decode at full size: 1/2 would fall below 224. Numbers in the
//! README ("Measured choices").

use std::io::Read;
use std::path::Path;

use fast_image_resize as fir;
use image::RgbImage;
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;

use crate::{LoadError, Orientation};

/// Where a decode ended up: the original size and the size actually decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedDims {
    pub orig_width: u32,
    pub orig_height: u32,
    pub width: u32,
    pub height: u32,
}

/// A reusable JPEG decoder with its output buffer (one per thread).
pub struct JpegDecoder {
    rgb: Vec<u8>,
}

impl JpegDecoder {
    pub fn new() -> Result<Self, String> {
        Ok(Self { rgb: Vec::new() })
    }

    /// Decodes to packed RGB. With `min_side = Some(s)` the decode is scaled in
    /// the DCT domain by the smallest of 1/8, 1/4, 1/2 that keeps both sides at
    /// least `s`, so the resize that follows still only shrinks; other images
    /// decode at full size.
    pub fn decode(
        &mut self,
        jpeg: &[u8],
        min_side: Option<u32>,
    ) -> Result<(DecodedDims, &[u8]), String> {
        match min_side {
            Some(side) => self.decode_at(jpeg, JpegScale::Covering { side }),
            None => self.decode_at(jpeg, JpegScale::Full),
        }
    }

    /// Decodes to packed RGB at the given scale (for benchmarks and experiments).
    pub fn decode_at(
        &mut self,
        jpeg: &[u8],
        scale: JpegScale,
    ) -> Result<(DecodedDims, &[u8]), String> {
        let mut zune = zune_jpeg::JpegDecoder::new_with_options(
            ZCursor::new(jpeg),
            DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::RGB),
        );
        zune.decode_headers().map_err(|e| e.to_string())?;
        let (width, height) = zune
            .dimensions()
            .ok_or_else(|| "JPEG without a frame header".to_string())?;
        let (orig_width, orig_height) = (width as u32, height as u32);
        check_claimed_size(orig_width, orig_height, jpeg.len() as u64)?;
        let eighths = match scale {
            JpegScale::Full => 8,
            JpegScale::Eighths(num) => num,
            JpegScale::Covering { side } => covering_eighths(orig_width, orig_height, side),
        };
        let dims = if eighths == 8 {
            let len = zune
                .output_buffer_size()
                .ok_or_else(|| "JPEG without a frame header".to_string())?;
            self.rgb.resize(len, 0);
            let rgb = &mut self.rgb;
            decoder_panic_as_error(move || zune.decode_into(rgb).map_err(|e| e.to_string()))?;
            DecodedDims {
                orig_width,
                orig_height,
                width: orig_width,
                height: orig_height,
            }
        } else {
            let rgb = &mut self.rgb;
            let (width, height) =
                decoder_panic_as_error(move || decode_reduced(jpeg, eighths, rgb))?;
            DecodedDims {
                orig_width,
                orig_height,
                width,
                height,
            }
        };
        Ok((dims, &self.rgb[..(dims.width * dims.height * 3) as usize]))
    }
}

/// Runs a third-party decoder, turning a panic inside it into an error for this one
/// file: fuzzing found a damaged JPEG on which zune-jpeg's IDCT panics (also through
/// the `image` crate), and one bad image must not end an epoch or a drawing
/// (`on_bad_image = "skip"` skips it like any other).
pub fn decoder_panic_as_error<T>(decode: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        Err(format!(
            "the JPEG decoder failed on this file ({})",
            panic_message(panic.as_ref())
        ))
    })
}

/// The text of a caught panic's payload (empty when it carries no text).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_default()
}

/// Images larger than this are refused (3 bytes a pixel decoded: 750 MB).
pub const MAX_IMAGE_PIXELS: u64 = 250_000_000;

/// The most pixels an image file can hold per byte: a flat 4:2:0 JPEG still needs
/// a few bits per 16x16 block (about 100 pixels a byte), a flat PNG a few hundred;
/// far beyond that the header lies, and decoding would allocate the claimed size
/// for nothing.
const MAX_PIXELS_PER_BYTE: u64 = 2048;

/// Refuses a header that claims more pixels than the file could hold (found by
/// fuzzing: a 409-byte JPEG claiming 16384x16384 made an 805 MB buffer and took
/// seconds to decode) or than any photo has. Every reader of image files calls it
/// before decoding.
pub fn check_claimed_size(width: u32, height: u32, file_len: u64) -> Result<(), String> {
    let pixels = width as u64 * height as u64;
    if pixels > MAX_IMAGE_PIXELS {
        return Err(format!(
            "the image is {width}x{height}, more than {MAX_IMAGE_PIXELS} pixels"
        ));
    }
    if pixels > MAX_PIXELS_PER_BYTE * file_len {
        return Err(format!(
            "the header claims {width}x{height} pixels but the file has only {file_len} bytes (truncated or corrupt)"
        ));
    }
    Ok(())
}

/// A JPEG decode scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegScale {
    Full,
    /// `n/8` of each side, n in 1, 2, 4, 8 (the reduced inverse DCTs there are).
    Eighths(u8),
    /// The smallest of 1/8, 1/4, 1/2 that keeps both sides at least `side`,
    /// else full size (what the loader uses).
    Covering {
        side: u32,
    },
}

/// The size of `dim` scaled by `num/8`, rounded up (libjpeg's and jpeg-decoder's rule).
fn scale_by_eighths(dim: u32, num: u8) -> u32 {
    (dim * num as u32).div_ceil(8)
}

/// The smallest of 1/8, 1/4, 1/2 (as eighths) that keeps both sides `>= side`, else 8.
fn covering_eighths(width: u32, height: u32, side: u32) -> u8 {
    [1, 2, 4]
        .into_iter()
        .find(|&num| scale_by_eighths(width, num) >= side && scale_by_eighths(height, num) >= side)
        .unwrap_or(8)
}

/// Decodes at `eighths/8` of each side with jpeg-decoder's reduced inverse
/// DCT into `out` (packed RGB); returns the decoded `(width, height)`.
fn decode_reduced(jpeg: &[u8], eighths: u8, out: &mut Vec<u8>) -> Result<(u32, u32), String> {
    let mut decoder = jpeg_decoder::Decoder::new(jpeg);
    decoder.read_info().map_err(|e| e.to_string())?;
    let info = decoder
        .info()
        .ok_or_else(|| "JPEG without a frame header".to_string())?;
    let (want_w, want_h) = (
        scale_by_eighths(info.width as u32, eighths),
        scale_by_eighths(info.height as u32, eighths),
    );
    let (w, h) = decoder
        .scale(want_w as u16, want_h as u16)
        .map_err(|e| e.to_string())?;
    let pixels = decoder.decode().map_err(|e| e.to_string())?;
    let (w, h) = (w as u32, h as u32);
    let n = (w * h) as usize;
    out.clear();
    out.reserve(n * 3);
    let info = decoder
        .info()
        .ok_or_else(|| "JPEG without a frame header".to_string())?;
    match info.pixel_format {
        jpeg_decoder::PixelFormat::RGB24 => out.extend_from_slice(&pixels[..n * 3]),
        jpeg_decoder::PixelFormat::L8 => out.extend(pixels[..n].iter().flat_map(|&l| [l, l, l])),
        jpeg_decoder::PixelFormat::L16 => out.extend(
            pixels[..n * 2]
                .chunks_exact(2)
                .flat_map(|be| [be[0], be[0], be[0]]),
        ),
        // Adobe CMYK JPEGs store inverted ink amounts (what jpeg-decoder hands back).
        jpeg_decoder::PixelFormat::CMYK32 => {
            out.extend(pixels[..n * 4].chunks_exact(4).flat_map(|cmyk| {
                let k = cmyk[3] as u32;
                [0, 1, 2].map(|i| ((cmyk[i] as u32 * k + 127) / 255) as u8)
            }))
        }
    }
    Ok((w, h))
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Full-size decode of any format the `image` crate reads (JPEG through zune-jpeg, PNG).
pub fn decode_with_image_crate(bytes: &[u8]) -> Result<RgbImage, String> {
    use image::ImageDecoder;
    let decoder = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| e.to_string())?
        .into_decoder()
        .map_err(|e| e.to_string())?;
    let (width, height) = decoder.dimensions();
    check_claimed_size(width, height, bytes.len() as u64)?;
    decoder_panic_as_error(|| {
        image::DynamicImage::from_decoder(decoder)
            .map(|img| img.to_rgb8())
            .map_err(|e| e.to_string())
    })
}

/// `(height, width)` of an image file, reading only what the header needs to.
pub fn read_image_size(path: &Path) -> Result<(u32, u32), LoadError> {
    let (w, h) = image::image_dimensions(path).map_err(|e| match e {
        image::ImageError::IoError(source) => LoadError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => LoadError::Decode {
            path: path.to_path_buf(),
            reason: other.to_string(),
        },
    })?;
    Ok((h, w))
}

/// Scales a `[top, left, bottom, right]` box of an `(h, w)` image to the
/// squashed `size x size` image, as the lesson's peers do (`coord * size / dim`).
pub fn squash_box(bbox: [f32; 4], orig_size: (u32, u32), size: u32) -> [f32; 4] {
    let sy = size as f32 / orig_size.0 as f32;
    let sx = size as f32 / orig_size.1 as f32;
    [bbox[0] * sy, bbox[1] * sx, bbox[2] * sy, bbox[3] * sx]
}

/// An image squashed to `size x size`, with the size it had.
#[derive(Debug, Clone)]
pub struct Squashed {
    pub image: RgbImage,
    /// `(height, width)` of the original image.
    pub orig_size: (u32, u32),
}

/// Decodes `path` and squashes it to `size x size` without cropping (the lesson's
/// `CropType.NO`), exactly as the loader does.
pub fn decode_squashed(path: &Path, size: u32) -> Result<Squashed, LoadError> {
    let mut pipeline = ImagePipeline::new().map_err(|reason| LoadError::Decode {
        path: path.to_path_buf(),
        reason,
    })?;
    let orig_size = pipeline.load_squashed(path, size, Orientation::AsStored)?;
    let image = RgbImage::from_raw(size, size, pipeline.squashed.clone())
        .expect("squashed buffer is size*size*3");
    Ok(Squashed { image, orig_size })
}

/// Per-thread decoding state, reused from image to image so that the hot loop
/// allocates nothing.
pub(crate) struct ImagePipeline {
    jpeg: JpegDecoder,
    squasher: Squasher,
    file: Vec<u8>,
    /// The last image squashed by [`ImagePipeline::load_squashed`], packed RGB.
    pub(crate) squashed: Vec<u8>,
    /// Scratch for transforms of the squashed image.
    pub(crate) scratch: Vec<u8>,
}

impl ImagePipeline {
    pub(crate) fn new() -> Result<Self, String> {
        Ok(Self {
            jpeg: JpegDecoder::new()?,
            squasher: Squasher::new(),
            file: Vec::new(),
            squashed: Vec::new(),
            scratch: Vec::new(),
        })
    }

    /// Reads, decodes and squashes `path` into `self.squashed`; returns the
    /// original `(height, width)` (as viewed, under [`Orientation::Exif`]).
    pub(crate) fn load_squashed(
        &mut self,
        path: &Path,
        size: u32,
        orientation: Orientation,
    ) -> Result<(u32, u32), LoadError> {
        let stored = self.load_squashed_as_stored(path, size)?;
        if orientation == Orientation::AsStored {
            return Ok(stored);
        }
        let exif = exif_orientation(&self.file);
        if exif == image::metadata::Orientation::NoTransforms {
            return Ok(stored);
        }
        // Squashing to a square commutes with the eight EXIF transforms (each
        // axis keeps its own scale), so the small square is turned, not the photo.
        let square = RgbImage::from_raw(size, size, std::mem::take(&mut self.squashed))
            .expect("squashed buffer is size*size*3");
        let mut square = image::DynamicImage::ImageRgb8(square);
        square.apply_orientation(exif);
        self.squashed = square.into_rgb8().into_raw();
        let turned = matches!(
            exif,
            image::metadata::Orientation::Rotate90
                | image::metadata::Orientation::Rotate270
                | image::metadata::Orientation::Rotate90FlipH
                | image::metadata::Orientation::Rotate270FlipH
        );
        let (h, w) = stored;
        Ok(if turned { (w, h) } else { (h, w) })
    }

    fn load_squashed_as_stored(&mut self, path: &Path, size: u32) -> Result<(u32, u32), LoadError> {
        self.file.clear();
        std::fs::File::open(path)
            .and_then(|mut f| f.read_to_end(&mut self.file))
            .map_err(|source| LoadError::Io {
                path: path.to_path_buf(),
                source,
            })?;
        let decode_error = |reason: String| LoadError::Decode {
            path: path.to_path_buf(),
            reason,
        };
        let squashed_len = (size as usize) * (size as usize) * 3;
        self.squashed.resize(squashed_len, 0);

        if is_jpeg(&self.file) {
            let (dims, rgb) = self
                .jpeg
                .decode(&self.file, Some(size))
                .map_err(decode_error)?;
            self.squasher
                .squash(rgb, dims.width, dims.height, size, &mut self.squashed)
                .map_err(decode_error)?;
            return Ok((dims.orig_height, dims.orig_width));
        }
        let rgb = decode_with_image_crate(&self.file).map_err(decode_error)?;
        let (w, h) = rgb.dimensions();
        self.squasher
            .squash(rgb.as_raw(), w, h, size, &mut self.squashed)
            .map_err(decode_error)?;
        Ok((h, w))
    }
}

/// The EXIF orientation of an image file (JPEG: its APP1 segment; other formats:
/// what the `image` crate reads); no transform when there is none or it is unreadable.
fn exif_orientation(file: &[u8]) -> image::metadata::Orientation {
    use image::metadata::Orientation as O;
    if is_jpeg(file) {
        return jpeg_exif(file)
            .and_then(O::from_exif_chunk)
            .unwrap_or(O::NoTransforms);
    }
    image::ImageReader::new(std::io::Cursor::new(file))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_decoder().ok())
        .and_then(|mut d| image::ImageDecoder::orientation(&mut d).ok())
        .unwrap_or(O::NoTransforms)
}

/// The TIFF block of a JPEG's EXIF segment (APP1 starting `Exif\0\0`), looked for
/// among the segments before the image data.
fn jpeg_exif(file: &[u8]) -> Option<&[u8]> {
    let mut at = 2; // after SOI
    while at + 4 <= file.len() && file[at] == 0xFF {
        let marker = file[at + 1];
        if marker == 0xDA || marker == 0xD9 {
            return None; // start of scan or end of image: no EXIF before the data
        }
        let len = usize::from(u16::from_be_bytes([file[at + 2], file[at + 3]]));
        let body = file.get(at + 4..at + 2 + len)?;
        if marker == 0xE1 && body.starts_with(b"Exif\0\0") {
            return Some(&body[6..]);
        }
        at += 2 + len;
    }
    None
}

/// Squashes packed RGB images to `size x size` (keeps fast_image_resize's
/// buffers between images).
#[derive(Default)]
pub struct Squasher {
    resizer: fir::Resizer,
}

impl Squasher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resizes packed RGB `width x height` to `size x size` into `out`
    /// (`size * size * 3` bytes).
    ///
    /// Shrinking uses fast_image_resize's box convolution with a kernel that
    /// adapts to the scale, i.e. area averaging like OpenCV's INTER_AREA; when a
    /// side must grow, bilinear (which is also what INTER_AREA does when enlarging).
    pub fn squash(
        &mut self,
        rgb: &[u8],
        width: u32,
        height: u32,
        size: u32,
        out: &mut [u8],
    ) -> Result<(), String> {
        if width == 0 || height == 0 {
            return Err(format!("image has no pixels ({width}x{height})"));
        }
        if width == size && height == size {
            out.copy_from_slice(&rgb[..out.len()]);
            return Ok(());
        }
        let src = fir::images::ImageRef::new(width, height, rgb, fir::PixelType::U8x3)
            .map_err(|e| e.to_string())?;
        let mut dst = fir::images::Image::from_slice_u8(size, size, out, fir::PixelType::U8x3)
            .map_err(|e| e.to_string())?;
        let filter = if width >= size && height >= size {
            fir::FilterType::Box
        } else {
            fir::FilterType::Bilinear
        };
        let options = fir::ResizeOptions::new().resize_alg(fir::ResizeAlg::Convolution(filter));
        self.resizer
            .resize(&src, &mut dst, &options)
            .map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covering_scale_is_the_smallest_eighth_that_keeps_both_sides() {
        // (width, height, min_side) -> decoded size
        let cases = [
            ((500, 375, 224), (500, 375)), // 1/2 would give a height of 188: full size
            ((500, 375, 180), (250, 188)), // 1/2
            ((1000, 1000, 224), (250, 250)), // 1/4
            ((1000, 900, 224), (250, 225)), // 1/4
            ((800, 600, 224), (400, 300)), // 1/2
            ((2000, 1800, 224), (250, 225)), // 1/8
            ((200, 300, 224), (200, 300)), // smaller than the target: full size
            ((224, 224, 224), (224, 224)),
        ];
        for ((w, h, side), want) in cases {
            let eighths = covering_eighths(w, h, side);
            let got = (scale_by_eighths(w, eighths), scale_by_eighths(h, eighths));
            assert_eq!(got, want, "{w}x{h} -> {side}");
        }
    }
}
