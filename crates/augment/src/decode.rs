//! Decoding and squashing: file -> RGB at (close to) the target size -> `size x size`.
//!
//! JPEGs go through libjpeg-turbo, which can also scale by 1/2, 1/4 or 1/8 while
//! decoding (a reduced inverse DCT); that is used when the smaller image still
//! covers the target, which pays off for large photos. The VOC images (about
//! 500x375, 34 KiB) decode at full size: there the entropy decoding dominates
//! and 5/8..7/8 scales are slower than a full decode. Numbers in the README.

use std::io::Read;
use std::path::Path;

use fast_image_resize as fir;
use image::RgbImage;

use crate::LoadError;

/// Where a decode ended up: the original size and the size actually decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodedDims {
    pub orig_width: u32,
    pub orig_height: u32,
    pub width: u32,
    pub height: u32,
}

/// A reusable libjpeg-turbo decompressor with its output buffer (one per thread).
pub struct JpegDecoder {
    tj: turbojpeg::Decompressor,
    rgb: Vec<u8>,
}

impl JpegDecoder {
    pub fn new() -> Result<Self, String> {
        let tj = turbojpeg::Decompressor::new()
            .map_err(|e| format!("cannot create a TurboJPEG decompressor: {e}"))?;
        Ok(Self {
            tj,
            rgb: Vec::new(),
        })
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
            Some(side) => self.decode_at(
                jpeg,
                JpegScale::Covering {
                    side,
                    eighths: &[1, 2, 4],
                },
            ),
            None => self.decode_at(jpeg, JpegScale::Full),
        }
    }

    /// Decodes to packed RGB at the given scale (for benchmarks and experiments).
    pub fn decode_at(
        &mut self,
        jpeg: &[u8],
        scale: JpegScale,
    ) -> Result<(DecodedDims, &[u8]), String> {
        let header = self.tj.read_header(jpeg).map_err(|e| e.to_string())?;
        let (orig_width, orig_height) = (header.width, header.height);
        let (width, height) = match scale {
            JpegScale::Full => (orig_width, orig_height),
            JpegScale::Eighths(num) => (
                scale_by_eighths(orig_width, num as usize),
                scale_by_eighths(orig_height, num as usize),
            ),
            JpegScale::Covering { side, eighths } => {
                scaled_dims(orig_width, orig_height, side as usize, eighths)
            }
        };
        self.rgb.resize(width * height * 3, 0);
        // TurboJPEG 2 picks the largest scaling factor whose output fits in
        // (width, height): exactly the factor chosen above.
        let output = turbojpeg::Image {
            pixels: &mut self.rgb[..],
            width,
            pitch: width * 3,
            height,
            format: turbojpeg::PixelFormat::RGB,
        };
        self.tj
            .decompress(jpeg, output)
            .map_err(|e| e.to_string())?;
        let dims = DecodedDims {
            orig_width: orig_width as u32,
            orig_height: orig_height as u32,
            width: width as u32,
            height: height as u32,
        };
        Ok((dims, &self.rgb))
    }
}

/// A libjpeg-turbo decode scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JpegScale {
    Full,
    /// `n/8` of each side (n = 1..=8).
    Eighths(u8),
    /// The smallest of the `eighths` (n/8, ascending) that keeps both sides at
    /// least `side`, else full size. The loader uses `[1, 2, 4]`: only those
    /// scales have SIMD inverse DCTs, and 5/8..7/8 decode slower than full
    /// size (see the README).
    Covering {
        side: u32,
        eighths: &'static [u8],
    },
}

/// libjpeg-turbo's TJSCALED: the size of `dim` scaled by `num/8`, rounded up.
fn scale_by_eighths(dim: usize, num: usize) -> usize {
    (dim * num).div_ceil(8)
}

/// The smallest size scaled by `eighths[i]/8` (ascending) whose sides are both
/// >= `min_side`, else the full size.
fn scaled_dims(width: usize, height: usize, min_side: usize, eighths: &[u8]) -> (usize, usize) {
    eighths
        .iter()
        .map(|&num| num as usize)
        .map(|num| (scale_by_eighths(width, num), scale_by_eighths(height, num)))
        .find(|&(w, h)| w >= min_side && h >= min_side)
        .unwrap_or((width, height))
}

fn is_jpeg(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0xFF, 0xD8, 0xFF])
}

/// Full-size decode of any format the `image` crate reads (JPEG through zune-jpeg, PNG).
pub fn decode_with_image_crate(bytes: &[u8]) -> Result<RgbImage, String> {
    image::load_from_memory(bytes)
        .map(|img| img.to_rgb8())
        .map_err(|e| e.to_string())
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
    let orig_size = pipeline.load_squashed(path, size)?;
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
    /// original `(height, width)`.
    pub(crate) fn load_squashed(
        &mut self,
        path: &Path,
        size: u32,
    ) -> Result<(u32, u32), LoadError> {
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
            match self.jpeg.decode(&self.file, Some(size)) {
                Ok((dims, rgb)) => {
                    self.squasher
                        .squash(rgb, dims.width, dims.height, size, &mut self.squashed)
                        .map_err(decode_error)?;
                    return Ok((dims.orig_height, dims.orig_width));
                }
                Err(turbo_error) => {
                    // libjpeg-turbo also fails on mere warnings (e.g. stray bytes
                    // before a marker); zune-jpeg may still read such files.
                    let fallback = decode_with_image_crate(&self.file)
                        .map_err(|_| decode_error(format!("libjpeg-turbo: {turbo_error}")))?;
                    tracing::warn!(
                        "{}: libjpeg-turbo failed ({turbo_error}); decoded with zune-jpeg instead",
                        path.display()
                    );
                    let (w, h) = fallback.dimensions();
                    self.squasher
                        .squash(fallback.as_raw(), w, h, size, &mut self.squashed)
                        .map_err(decode_error)?;
                    return Ok((h, w));
                }
            }
        }
        let rgb = decode_with_image_crate(&self.file).map_err(decode_error)?;
        let (w, h) = rgb.dimensions();
        self.squasher
            .squash(rgb.as_raw(), w, h, size, &mut self.squashed)
            .map_err(decode_error)?;
        Ok((h, w))
    }
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
    fn scaled_dims_pick_the_smallest_eighth_that_covers_the_target() {
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
            assert_eq!(
                scaled_dims(w, h, side, &[1, 2, 4]),
                want,
                "{w}x{h} -> {side}"
            );
        }
    }
}
