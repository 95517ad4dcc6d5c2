//! The JPEG decoders: a photo much larger than the target decodes at a
//! reduced DCT scale yet squashes to nearly the same picture as a full
//! decode; grayscale JPEGs come out as RGB; damaged files are errors.

use augment::{JpegDecoder, JpegScale, Squasher};
use image::codecs::jpeg::JpegEncoder;
use image::{ExtendedColorType, GrayImage, RgbImage};

fn jpeg_rgb(image: &RgbImage) -> Vec<u8> {
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode(
            image.as_raw(),
            image.width(),
            image.height(),
            ExtendedColorType::Rgb8,
        )
        .unwrap();
    bytes
}

/// Smooth colour gradients with a few hard edges: what squashing sees in a photo.
fn photo(width: u32, height: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let edge = if (x / 97 + y / 61) % 2 == 0 { 40 } else { 0 };
        image::Rgb([
            (x * 200 / width) as u8 + edge,
            (y * 200 / height) as u8 + edge,
            ((x + y) * 100 / (width + height)) as u8 + edge,
        ])
    })
}

fn squash(rgb: &[u8], width: u32, height: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0; (size * size * 3) as usize];
    Squasher::new()
        .squash(rgb, width, height, size, &mut out)
        .unwrap();
    out
}

#[test]
fn a_large_photo_decodes_at_reduced_scale_to_nearly_the_full_decode() {
    let bytes = jpeg_rgb(&photo(2000, 1500));
    let mut decoder = JpegDecoder::new().unwrap();
    let (full_dims, full) = decoder.decode_at(&bytes, JpegScale::Full).unwrap();
    assert_eq!((full_dims.width, full_dims.height), (2000, 1500));
    let full_squashed = squash(full, 2000, 1500, 224);

    let (dims, reduced) = decoder.decode(&bytes, Some(224)).unwrap();
    // 1/4 keeps both sides >= 224 (500x375); 1/8 (250x188) would not.
    assert_eq!((dims.width, dims.height), (500, 375));
    assert_eq!((dims.orig_width, dims.orig_height), (2000, 1500));
    let reduced_squashed = squash(reduced, dims.width, dims.height, 224);

    let mean_abs_diff = full_squashed
        .iter()
        .zip(&reduced_squashed)
        .map(|(&a, &b)| (a as f64 - b as f64).abs())
        .sum::<f64>()
        / full_squashed.len() as f64;
    assert!(
        mean_abs_diff < 2.0,
        "reduced-scale decode differs by {mean_abs_diff:.2} levels on average"
    );
}

#[test]
fn a_vocs_sized_photo_decodes_at_full_size() {
    let bytes = jpeg_rgb(&photo(500, 375));
    let mut decoder = JpegDecoder::new().unwrap();
    let (dims, rgb) = decoder.decode(&bytes, Some(224)).unwrap();
    assert_eq!((dims.width, dims.height), (500, 375));
    assert_eq!(rgb.len(), 500 * 375 * 3);
}

#[test]
fn grayscale_jpegs_decode_to_grey_rgb_at_every_scale() {
    let gray = GrayImage::from_fn(1000, 800, |x, y| image::Luma([((x + y) % 256) as u8]));
    let mut bytes = Vec::new();
    JpegEncoder::new_with_quality(&mut bytes, 90)
        .encode(gray.as_raw(), 1000, 800, ExtendedColorType::L8)
        .unwrap();
    let mut decoder = JpegDecoder::new().unwrap();
    for scale in [JpegScale::Full, JpegScale::Covering { side: 224 }] {
        let (dims, rgb) = decoder.decode_at(&bytes, scale).unwrap();
        assert_eq!(
            rgb.len(),
            (dims.width * dims.height * 3) as usize,
            "{scale:?}"
        );
        assert!(
            rgb.chunks_exact(3).all(|p| p[0] == p[1] && p[1] == p[2]),
            "{scale:?}: grey pixels have equal channels"
        );
    }
}

#[test]
fn damaged_jpegs_are_errors_not_panics() {
    let bytes = jpeg_rgb(&photo(1200, 900));
    let mut decoder = JpegDecoder::new().unwrap();
    for cut in [0, 3, 100, bytes.len() / 3] {
        for scale in [JpegScale::Full, JpegScale::Covering { side: 224 }] {
            // A truncated file may decode partially (grey fill) or fail; it must not panic.
            let _ = decoder.decode_at(&bytes[..cut], scale);
        }
    }
    assert!(decoder
        .decode_at(&[0xFF, 0xD8, 0xFF, 0x00], JpegScale::Full)
        .is_err());
}

/// A small JPEG whose frame header is rewritten to claim `width x height`.
fn lying_jpeg(width: u16, height: u16) -> Vec<u8> {
    let mut bytes = jpeg_rgb(&RgbImage::from_pixel(16, 16, image::Rgb([90, 90, 90])));
    let sof = bytes
        .windows(2)
        .position(|m| m == [0xFF, 0xC0])
        .expect("a baseline frame header");
    bytes[sof + 5..sof + 7].copy_from_slice(&height.to_be_bytes());
    bytes[sof + 7..sof + 9].copy_from_slice(&width.to_be_bytes());
    bytes
}

#[test]
fn a_frame_header_claiming_more_than_the_file_holds_is_refused_before_decoding() {
    let mut decoder = JpegDecoder::new().unwrap();
    for scale in [
        JpegScale::Full,
        JpegScale::Eighths(1),
        JpegScale::Covering { side: 224 },
    ] {
        let mut error = |width, height| {
            decoder
                .decode_at(&lying_jpeg(width, height), scale)
                .map(|(dims, _)| dims)
                .unwrap_err()
        };
        let too_dense = error(8000, 8000);
        assert!(
            too_dense.contains("8000x8000") && too_dense.contains("bytes"),
            "{too_dense}"
        );
        let too_large = error(16384, 16384);
        assert!(too_large.contains("more than"), "{too_large}");
    }
    // A real, highly compressible photo of the same file size decodes.
    decoder
        .decode_at(&lying_jpeg(16, 16), JpegScale::Full)
        .unwrap();
}

/// A damaged JPEG (found by fuzzing, kept in the fuzz corpus) on which zune-jpeg's
/// IDCT panics: every decode path returns an error for this file instead.
#[test]
fn a_jpeg_that_panics_the_decoder_is_an_error_for_that_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus/jpeg/crash-zune_idct_store_panic.jpg");
    let bytes = std::fs::read(&path).unwrap();
    let mut decoder = JpegDecoder::new().unwrap();
    for scale in [JpegScale::Full, JpegScale::Covering { side: 224 }] {
        assert!(decoder.decode_at(&bytes, scale).is_err());
    }
    assert!(augment::decode_with_image_crate(&bytes).is_err());
}
