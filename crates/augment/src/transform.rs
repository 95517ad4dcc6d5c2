//! The lesson's side-on augmentations (fastai 0.7 `transforms_side_on` with
//! `TfmType.COORD`): rotate about the centre with a reflected border, lighting,
//! horizontal flip, the box following the image; then ImageNet normalisation.
//!
//! Rotation and flip are fused into one affine warp (one bilinear sampling
//! pass), and lighting is fused with normalisation into a per-image 3x256
//! lookup table applied while transposing HWC u8 to CHW f32.

use image::RgbImage;
use rand::Rng;

use crate::{AugmentParams, BoxMode, Normalisation, Object};

pub const IMAGENET_MEAN: [f32; 3] = [0.485, 0.456, 0.406];
pub const IMAGENET_STD: [f32; 3] = [0.229, 0.224, 0.225];

/// A 2-D affine map on pixel coordinates `(x = column, y = row)`:
/// `x' = m[0][0] x + m[0][1] y + m[0][2]`, `y' = m[1][0] x + m[1][1] y + m[1][2]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Affine(pub [[f64; 3]; 2]);

impl Affine {
    pub const IDENTITY: Affine = Affine([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]);

    /// OpenCV's `getRotationMatrix2D(centre, deg, 1)`: positive angles turn the
    /// image counter-clockwise as displayed.
    pub fn rotation(deg: f64, cx: f64, cy: f64) -> Affine {
        let (sin, cos) = deg.to_radians().sin_cos();
        Affine([
            [cos, sin, (1.0 - cos) * cx - sin * cy],
            [-sin, cos, sin * cx + (1.0 - cos) * cy],
        ])
    }

    /// Mirror left-right in an image `width` pixels wide: column `x` -> `width - 1 - x`.
    pub fn hflip(width: u32) -> Affine {
        Affine([[-1.0, 0.0, width as f64 - 1.0], [0.0, 1.0, 0.0]])
    }

    /// `self` first, then `next`.
    pub fn then(&self, next: &Affine) -> Affine {
        let [[a, b, c], [d, e, f]] = next.0;
        let [[p, q, r], [s, t, u]] = self.0;
        Affine([
            [a * p + b * s, a * q + b * t, a * r + b * u + c],
            [d * p + e * s, d * q + e * t, d * r + e * u + f],
        ])
    }

    pub fn inverse(&self) -> Affine {
        let [[a, b, c], [d, e, f]] = self.0;
        let det = a * e - b * d;
        let (ia, ib, id, ie) = (e / det, -b / det, -d / det, a / det);
        Affine([[ia, ib, -(ia * c + ib * f)], [id, ie, -(id * c + ie * f)]])
    }

    pub fn apply(&self, x: f64, y: f64) -> (f64, f64) {
        let [[a, b, c], [d, e, f]] = self.0;
        (a * x + b * y + c, d * x + e * y + f)
    }
}

/// The random choices for one image, drawn in a fixed order from its own RNG.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AugmentDraw {
    /// 0 when the image is not rotated.
    pub rotate_deg: f32,
    pub flip: bool,
    /// Lighting `b`, uniform in +/- `lighting_b`.
    pub brightness: f32,
    /// Lighting `c`, uniform in +/- `lighting_c` (before the `c'` mapping).
    pub contrast: f32,
    /// Magnification, uniform in `1..max_zoom` (1: none).
    pub zoom: f32,
    /// Where the zoomed window sits, as fractions (x, y) of the room the
    /// window leaves: 0 at the left / top edge, 1 at the right / bottom.
    pub zoom_at: [f32; 2],
}

/// Uniform in `[-range, range)` like fastai's `rand0`; fine for `range = 0`.
fn symmetric_uniform(rng: &mut impl Rng, range: f32) -> f32 {
    rng.random::<f32>() * 2.0 * range - range
}

impl AugmentDraw {
    /// Nothing changes: no rotation, no flip, neutral lighting.
    pub const NONE: AugmentDraw = AugmentDraw {
        rotate_deg: 0.0,
        flip: false,
        brightness: 0.0,
        contrast: 0.0,
        zoom: 1.0,
        zoom_at: [0.5, 0.5],
    };

    pub fn sample(params: &AugmentParams, rng: &mut impl Rng) -> AugmentDraw {
        // Every value is drawn whatever the outcome, so the stream stays aligned.
        let rotates = rng.random::<f32>() < params.rotate_p;
        let angle = symmetric_uniform(rng, params.rotate_deg);
        let brightness = symmetric_uniform(rng, params.lighting_b);
        let contrast = symmetric_uniform(rng, params.lighting_c);
        let flip = rng.random::<f32>() < params.flip_p;
        // Drawn last, so the draws before it are those of a build without zoom.
        let zoom = 1.0 + rng.random::<f32>() * (params.max_zoom - 1.0);
        let zoom_at = [rng.random::<f32>(), rng.random::<f32>()];
        AugmentDraw {
            rotate_deg: if rotates { angle } else { 0.0 },
            flip,
            brightness,
            contrast,
            zoom,
            zoom_at,
        }
    }

    /// The draw the [`Loader`](crate::Loader) makes for item `item_index` in
    /// `epoch` under `seed` (for showing exactly what training saw).
    pub fn for_item(
        params: &AugmentParams,
        seed: u64,
        epoch: u64,
        item_index: usize,
    ) -> AugmentDraw {
        AugmentDraw::sample(
            params,
            &mut crate::loader::image_rng(seed, epoch, item_index),
        )
    }

    /// Whether the draw moves pixels (rotation, flip or zoom).
    pub fn is_geometric(&self) -> bool {
        self.rotate_deg != 0.0 || self.flip || self.zoom != 1.0
    }

    /// Whether the only move is the mirror (which [`hflip_into`] does exactly,
    /// at a fraction of a warp's cost).
    pub fn is_flip_only(&self) -> bool {
        self.flip && self.rotate_deg == 0.0 && self.zoom == 1.0
    }

    /// The forward map of the geometric part: rotation about the centre
    /// (`(w div 2, h div 2)` as the lesson's `rotate_cv`), then the flip,
    /// then the zoom (fastai 0.7's order: side-on transforms, then scale and
    /// crop).
    pub fn affine(&self, width: u32, height: u32) -> Affine {
        let rotate = Affine::rotation(
            self.rotate_deg as f64,
            (width / 2) as f64,
            (height / 2) as f64,
        );
        let moved = if self.flip {
            rotate.then(&Affine::hflip(width))
        } else {
            rotate
        };
        if self.zoom == 1.0 {
            return moved;
        }
        let zoom = self.zoom as f64;
        // The window of `side / zoom` starts `at` of the way along the rest;
        // on pixel edges (pixel `x` spans `x - 0.5 .. x + 0.5`) it maps onto
        // `-0.5 .. side - 0.5`: `x' + 0.5 = zoom (x + 0.5 - start)`.
        let shift = |side: u32, at: f32| {
            let start = at as f64 * side as f64 * (1.0 - 1.0 / zoom);
            zoom * (0.5 - start) - 0.5
        };
        moved.then(&Affine([
            [zoom, 0.0, shift(width, self.zoom_at[0])],
            [0.0, zoom, shift(height, self.zoom_at[1])],
        ]))
    }

    /// [`AugmentDraw::affine`] when the draw moves pixels, else `None`: the
    /// `forward` that [`move_box`] and [`move_objects`] take.
    pub fn geometry(&self, width: u32, height: u32) -> Option<Affine> {
        self.is_geometric().then(|| self.affine(width, height))
    }
}

/// Mirrors packed RGB rows of `width` pixels left to right (`x -> w-1-x`).
pub fn hflip_into(src: &[u8], width: u32, dst: &mut [u8]) {
    let stride = width as usize * 3;
    for (src_row, dst_row) in src.chunks_exact(stride).zip(dst.chunks_exact_mut(stride)) {
        for (s, d) in src_row
            .chunks_exact(3)
            .zip(dst_row.chunks_exact_mut(3).rev())
        {
            d.copy_from_slice(s);
        }
    }
}

/// OpenCV's BORDER_REFLECT (`fedcba|abcdefgh|hgfedcb`) index for any `i`.
#[inline]
fn reflect(i: i64, n: i64) -> usize {
    // The warp's taps are at most a few pixels outside: no division for them.
    if (0..n).contains(&i) {
        return i as usize;
    }
    if (-n..0).contains(&i) {
        return (-1 - i) as usize;
    }
    if (n..2 * n).contains(&i) {
        return (2 * n - 1 - i) as usize;
    }
    let period = 2 * n;
    let i = i.rem_euclid(period);
    (if i >= n { period - 1 - i } else { i }) as usize
}

/// Warps packed RGB `src` (`width x height`) by the forward map `forward` into
/// `dst` (same size) with bilinear sampling and a reflected border, like
/// `cv2.warpAffine(src, M, (w, h), borderMode=cv2.BORDER_REFLECT)`.
///
/// Source coordinates are stepped in 16.16 fixed point along each row (as
/// OpenCV does) and blended with 8-bit weights, so pixel-exact maps (identity,
/// flips) reproduce the input exactly.
pub fn warp_affine_reflect(src: &[u8], width: u32, height: u32, forward: &Affine, dst: &mut [u8]) {
    warp_affine_reflect_with(src, width, height, forward, dst, true);
}

/// [`warp_affine_reflect`], with the AVX2 path allowed or not (tests compare the two).
fn warp_affine_reflect_with(
    src: &[u8],
    width: u32,
    height: u32,
    forward: &Affine,
    dst: &mut [u8],
    simd: bool,
) {
    let (w, h) = (width as usize, height as usize);
    assert_eq!(src.len(), w * h * 3, "source is not {width}x{height} RGB");
    assert_eq!(
        dst.len(),
        w * h * 3,
        "destination is not {width}x{height} RGB"
    );
    let [[a, b, c], [d, e, f]] = forward.inverse().0;
    const ONE: f64 = 65536.0;
    let step_x = (a * ONE).round() as i64;
    let step_y = (d * ONE).round() as i64;
    let (wi, hi) = (w as i64, h as i64);
    let stride = w * 3;
    #[cfg(target_arch = "x86_64")]
    let avx2 =
        simd && std::arch::is_x86_feature_detected!("avx2") && src.len() < (i32::MAX / 4) as usize;
    #[cfg(not(target_arch = "x86_64"))]
    let _ = simd;
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: AVX2 was detected above.
        unsafe { warp_rows_avx2(src, (wi, hi), stride, (b, c, e, f), (step_x, step_y), dst) };
        return;
    }
    warp_rows(
        src,
        (wi, hi),
        stride,
        (b, c, e, f),
        (step_x, step_y),
        dst,
        false,
    );
}

/// [`warp_rows`] compiled for AVX2, so that the 8-pixel kernel inlines into it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn warp_rows_avx2(
    src: &[u8],
    size: (i64, i64),
    stride: usize,
    row_map: (f64, f64, f64, f64),
    steps: (i64, i64),
    dst: &mut [u8],
) {
    warp_rows(src, size, stride, row_map, steps, dst, true);
}

/// The rows of [`warp_affine_reflect_with`]: `row_map` = `(b, c, e, f)` of the
/// inverse map, `steps` its per-column steps in 16.16 fixed point.
#[inline(always)]
fn warp_rows(
    src: &[u8],
    (wi, hi): (i64, i64),
    stride: usize,
    (b, c, e, f): (f64, f64, f64, f64),
    (step_x, step_y): (i64, i64),
    dst: &mut [u8],
    avx2: bool,
) {
    const ONE: f64 = 65536.0;
    let w = wi as usize;
    let _ = avx2;
    for (row, dst_row) in dst.chunks_exact_mut(stride).enumerate() {
        let start_x = ((b * row as f64 + c) * ONE).round() as i64;
        let start_y = ((e * row as f64 + f) * ONE).round() as i64;
        let mut col = 0;
        while col < w {
            let sx = start_x + col as i64 * step_x;
            let sy = start_y + col as i64 * step_y;
            #[cfg(target_arch = "x86_64")]
            if avx2 && col + 8 <= w {
                let (last_x, last_y) = ((sx + 7 * step_x) >> 16, (sy + 7 * step_y) >> 16);
                // Coordinates are linear along the row, so if both ends of the
                // group are inside (clear of the last column and the last two
                // rows, for the 4-byte gathers), all eight are.
                let inside = |x0: i64, y0: i64| x0 >= 0 && x0 + 1 < wi && y0 >= 0 && y0 + 2 < hi;
                if inside(sx >> 16, sy >> 16) && inside(last_x, last_y) {
                    // SAFETY: AVX2 was detected; every tap read is inside `src`
                    // (checked just above) and the 24 bytes written are pixels
                    // col..col+8 of this row.
                    unsafe {
                        warp8_avx2(
                            src.as_ptr(),
                            stride,
                            sx,
                            sy,
                            step_x,
                            step_y,
                            dst_row[col * 3..col * 3 + 24].as_mut_ptr(),
                        );
                    }
                    col += 8;
                    continue;
                }
            }
            let out = &mut dst_row[col * 3..col * 3 + 3];
            let (x0, y0) = (sx >> 16, sy >> 16);
            let fx = ((sx >> 8) & 255) as u16;
            let fy = ((sy >> 8) & 255) as u16;
            let interior = x0 >= 0 && x0 + 1 < wi && y0 >= 0 && y0 + 1 < hi;
            let i = (y0 * stride as i64 + x0 * 3) as usize;
            let (top, bottom) = if interior && i + stride + 8 <= src.len() {
                // The four taps are two adjacent pixel pairs: two 8-byte loads.
                (load8(&src[i..]), load8(&src[i + stride..]))
            } else {
                let (c0, c1) = (reflect(x0, wi) * 3, reflect(x0 + 1, wi) * 3);
                let (r0, r1) = (reflect(y0, hi) * stride, reflect(y0 + 1, hi) * stride);
                let pair = |r: usize| {
                    let mut bytes = [0u8; 8];
                    bytes[..3].copy_from_slice(&src[r + c0..r + c0 + 3]);
                    bytes[3..6].copy_from_slice(&src[r + c1..r + c1 + 3]);
                    u64::from_le_bytes(bytes)
                };
                (pair(r0), pair(r1))
            };
            out.copy_from_slice(&blend_rgb_pairs(top, bottom, fx, fy).to_le_bytes()[..3]);
            col += 1;
        }
    }
}

/// Eight interior output pixels at once: the same arithmetic as
/// [`blend_rgb_pairs`] (bit for bit), two pixels per AVX2 register.
///
/// The taps are fetched with plain 8-byte loads (each holds a pixel and its
/// right neighbour, as in the scalar path): on AMD cores a gather costs about a
/// load per element plus a long fixed overhead, so 16 scalar loads are several
/// times cheaper than the four 8-lane gathers this function used before.
///
/// # Safety
/// AVX2 must be available; for the source coordinates `(sx + k*step_x, sy +
/// k*step_y)`, k = 0..8 (16.16 fixed point, non-negative), the bytes
/// `idx..idx+stride+8` of `src` must be readable where `idx = y0*stride + 3*x0`;
/// `out` must be writable for 24 bytes.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn warp8_avx2(
    src: *const u8,
    stride: usize,
    sx: i64,
    sy: i64,
    step_x: i64,
    step_y: i64,
    out: *mut u8,
) {
    use std::arch::x86_64::*;
    // Row y0 and row y0+1 at column x0: the pixel pair (x0, x0+1) of each.
    let taps = |k: i64| {
        let (x, y) = (sx + k * step_x, sy + k * step_y);
        let p = src.add((y >> 16) as usize * stride + (x >> 16) as usize * 3);
        (
            (p as *const i64).read_unaligned(),
            (p.add(stride) as *const i64).read_unaligned(),
        )
    };
    let (t0, b0) = taps(0);
    let (t1, b1) = taps(1);
    let (t2, b2) = taps(2);
    let (t3, b3) = taps(3);
    let (t4, b4) = taps(4);
    let (t5, b5) = taps(5);
    let (t6, b6) = taps(6);
    let (t7, b7) = taps(7);
    // Pixels (0, 1 | 2, 3) and (4, 5 | 6, 7), one 64-bit pair each.
    let top_a = _mm256_set_epi64x(t3, t2, t1, t0);
    let bottom_a = _mm256_set_epi64x(b3, b2, b1, b0);
    let top_b = _mm256_set_epi64x(t7, t6, t5, t4);
    let bottom_b = _mm256_set_epi64x(b7, b6, b5, b4);

    // The 8-bit weights of the eight pixels, then each pixel's weight (and
    // 256 minus it) in all eight 16-bit lanes of the 128-bit half holding it.
    let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let coords = |start: i64, step: i64| {
        _mm256_add_epi32(
            _mm256_set1_epi32(start as i32),
            _mm256_mullo_epi32(lanes, _mm256_set1_epi32(step as i32)),
        )
    };
    let byte = _mm256_set1_epi32(255);
    let fx = _mm256_and_si256(_mm256_srai_epi32::<8>(coords(sx, step_x)), byte);
    let fy = _mm256_and_si256(_mm256_srai_epi32::<8>(coords(sy, step_y)), byte);
    let pairs = _mm256_set1_epi32(0x0001_0001);
    let full = _mm256_set1_epi32(256);
    let weights = |w: __m256i| {
        (
            _mm256_mullo_epi32(_mm256_sub_epi32(full, w), pairs),
            _mm256_mullo_epi32(w, pairs),
        )
    };
    let ((fx_inv, fx), (fy_inv, fy)) = (weights(fx), weights(fy));
    let spread = |w: __m256i, first: i32, second: i32| {
        _mm256_permutevar8x32_epi32(
            w,
            _mm256_setr_epi32(first, first, first, first, second, second, second, second),
        )
    };
    let zero = _mm256_setzero_si256();
    let half = _mm256_set1_epi16(128);
    let mix = |a: __m256i, b: __m256i, a_weight: __m256i, b_weight: __m256i| {
        let sum = _mm256_add_epi16(
            _mm256_mullo_epi16(a, a_weight),
            _mm256_mullo_epi16(b, b_weight),
        );
        _mm256_srli_epi16::<8>(_mm256_add_epi16(sum, half))
    };
    // Two pixels `first`, `second` (one per 128-bit half, as 8 u16 lanes: the
    // left tap's RGB, the right tap's RGB, two spare): vertical, then
    // horizontal; the result's RGB is in lanes 0..3 of each half.
    let blend = |top: __m256i, bottom: __m256i, first: i32, second: i32| {
        let vertical = mix(
            top,
            bottom,
            spread(fy_inv, first, second),
            spread(fy, first, second),
        );
        let right = _mm256_srli_si256::<6>(vertical);
        mix(
            vertical,
            right,
            spread(fx_inv, first, second),
            spread(fx, first, second),
        )
    };
    let group = |top: __m256i, bottom: __m256i, base: i32| {
        let even = blend(
            _mm256_unpacklo_epi8(top, zero),
            _mm256_unpacklo_epi8(bottom, zero),
            base,
            base + 2,
        );
        let odd = blend(
            _mm256_unpackhi_epi8(top, zero),
            _mm256_unpackhi_epi8(bottom, zero),
            base + 1,
            base + 3,
        );
        // (p0, p1 | p2, p3) as RGBX in 16-bit lanes
        _mm256_unpacklo_epi64(even, odd)
    };
    let a = group(top_a, bottom_a, 0);
    let b = group(top_b, bottom_b, 4);
    // (p0 p1 p4 p5 | p2 p3 p6 p7) as RGBX bytes -> (p0..p3 | p4..p7)
    let rgbx = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packus_epi16(a, b));
    // RGBX x 4 per 128-bit lane -> RGB x 4 in the low 12 bytes of each lane.
    let to_rgb = _mm256_setr_epi8(
        0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13, 14, -1, -1, -1, -1, 0, 1, 2, 4, 5, 6, 8, 9, 10, 12, 13,
        14, -1, -1, -1, -1,
    );
    let rgb = _mm256_shuffle_epi8(rgbx, to_rgb);
    let (first, second) = (
        _mm256_castsi256_si128(rgb),
        _mm256_extracti128_si256::<1>(rgb),
    );
    // 16 bytes at 0 (the last 4 are overwritten next), then 8 + 4 bytes at 12.
    _mm_storeu_si128(out as *mut __m128i, first);
    _mm_storel_epi64(out.add(12) as *mut __m128i, second);
    (out.add(20) as *mut i32).write_unaligned(_mm_extract_epi32::<2>(second));
}

fn load8(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

/// Bilinear blend of two RGB pixel pairs (bytes 0..3 and 3..6 of `top` and
/// `bottom`) with 8-bit weights `fx`, `fy` in 0..256: first vertically, then
/// horizontally, rounding after each. Returns RGB in the low three bytes.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn blend_rgb_pairs(top: u64, bottom: u64, fx: u16, fy: u16) -> u32 {
    use std::arch::x86_64::*;
    // SAFETY: SSE2 is part of the x86_64 baseline, so every x86_64 CPU has
    // these instructions; none of them touches memory.
    unsafe {
        let zero = _mm_setzero_si128();
        let top = _mm_unpacklo_epi8(_mm_cvtsi64_si128(top as i64), zero);
        let bottom = _mm_unpacklo_epi8(_mm_cvtsi64_si128(bottom as i64), zero);
        let half = _mm_set1_epi16(128);
        // Products stay below 2^16, so 16-bit lanes cannot overflow.
        let vertical = _mm_add_epi16(
            _mm_mullo_epi16(top, _mm_set1_epi16((256 - fy) as i16)),
            _mm_mullo_epi16(bottom, _mm_set1_epi16(fy as i16)),
        );
        let vertical = _mm_srli_epi16(_mm_add_epi16(vertical, half), 8);
        let right = _mm_srli_si128(vertical, 6);
        let mixed = _mm_add_epi16(
            _mm_mullo_epi16(vertical, _mm_set1_epi16((256 - fx) as i16)),
            _mm_mullo_epi16(right, _mm_set1_epi16(fx as i16)),
        );
        let mixed = _mm_srli_epi16(_mm_add_epi16(mixed, half), 8);
        _mm_cvtsi128_si32(_mm_packus_epi16(mixed, mixed)) as u32
    }
}

/// The same arithmetic as the SSE2 version, one channel at a time.
#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn blend_rgb_pairs(top: u64, bottom: u64, fx: u16, fy: u16) -> u32 {
    let (top, bottom) = (top.to_le_bytes(), bottom.to_le_bytes());
    let (fx, fy) = (fx as u32, fy as u32);
    let vertical = |i: usize| (top[i] as u32 * (256 - fy) + bottom[i] as u32 * fy + 128) >> 8;
    let mut rgb = 0u32;
    for ch in 0..3 {
        let v = (vertical(ch) * (256 - fx) + vertical(ch + 3) * fx + 128) >> 8;
        rgb |= v << (8 * ch);
    }
    rgb
}

/// Clamps a box to `[0, width-1] x [0, height-1]`.
fn clamp_box(bbox: [f32; 4], width: u32, height: u32) -> [f32; 4] {
    let (max_x, max_y) = ((width - 1) as f32, (height - 1) as f32);
    let cy = |v: f32| v.max(0.0).min(max_y);
    let cx = |v: f32| v.max(0.0).min(max_x);
    [cy(bbox[0]), cx(bbox[1]), cy(bbox[2]), cx(bbox[3])]
}

/// The tight box around the four corners of `bbox` (`[top, left, bottom,
/// right]`) moved by `forward`, not clamped: it may reach outside the image.
fn tight_box(bbox: [f32; 4], forward: &Affine) -> [f32; 4] {
    let [top, left, bottom, right] = bbox.map(|v| v as f64);
    let corners = [(left, top), (right, top), (left, bottom), (right, bottom)]
        .map(|(x, y)| forward.apply(x, y));
    let min_x = corners.iter().map(|p| p.0).fold(f64::INFINITY, f64::min);
    let max_x = corners
        .iter()
        .map(|p| p.0)
        .fold(f64::NEG_INFINITY, f64::max);
    let min_y = corners.iter().map(|p| p.1).fold(f64::INFINITY, f64::min);
    let max_y = corners
        .iter()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    [min_y as f32, min_x as f32, max_y as f32, max_x as f32]
}

/// The tight box around the four corners of `bbox` (`[top, left, bottom,
/// right]`) moved by `forward`, clamped to the `width x height` image.
pub fn box_after_affine(bbox: [f32; 4], forward: &Affine, width: u32, height: u32) -> [f32; 4] {
    clamp_box(tight_box(bbox, forward), width, height)
}

/// What a box was before `forward` moved it, when `moved` is its tight box
/// ([`box_after_affine`] before clamping): how a box predicted on an augmented
/// image maps back to the image (test-time augmentation). Rotation makes the
/// tight box larger than the box, so the corners mapped back would give a box
/// larger still; this undoes the tight box instead. A `w x h` box's tight box
/// under the linear part `[[a, b], [d, e]]` of `forward` is
/// `(|a| w + |b| h) x (|d| w + |e| h)` about the moved centre, so the extents
/// solve a 2x2 system and the centre maps back. An extent that comes out
/// negative (a moved box thinner than any tight box of that rotation) is 0;
/// where the system is singular (a rotation by 45 degrees) the tight box of
/// the corners mapped back is the answer.
pub fn box_before_affine(moved: [f32; 4], forward: &Affine) -> [f32; 4] {
    let [[a, b, _], [d, e, _]] = forward.0;
    let (a, b, d, e) = (a.abs(), b.abs(), d.abs(), e.abs());
    let det = a * e - b * d;
    let inverse = forward.inverse();
    if det.abs() < 1e-9 * (a * e + b * d).max(f64::MIN_POSITIVE) {
        return tight_box(moved, &inverse);
    }
    let [top, left, bottom, right] = moved.map(|v| v as f64);
    let (width, height) = (right - left, bottom - top);
    let w = ((e * width - b * height) / det).max(0.0);
    let h = ((a * height - d * width) / det).max(0.0);
    let (cx, cy) = inverse.apply((left + right) / 2.0, (top + bottom) / 2.0);
    [cy - h / 2.0, cx - w / 2.0, cy + h / 2.0, cx + w / 2.0].map(|v| v as f32)
}

/// The lesson's box transform: the box rasterised as a 0/1 mask (rows
/// `round(top)..=round(bottom)`, columns likewise), warped by `forward` with
/// bilinear sampling and a zero border, and the bounding box of the pixels
/// above 0.5. `None` when no pixel is (the box left the image).
pub fn mask_box_after_affine(
    bbox: [f32; 4],
    forward: &Affine,
    width: u32,
    height: u32,
) -> Option<[f32; 4]> {
    mask_scan(bbox, forward, width, height).found
}

/// What [`mask_box_after_affine`] sees of a box: the bounding box of the
/// warped mask's pixels above 0.5, how many there are, and how many the mask
/// had before the warp.
struct MaskScan {
    found: Option<[f32; 4]>,
    pixels: u64,
    source_pixels: u64,
}

fn mask_scan(bbox: [f32; 4], forward: &Affine, width: u32, height: u32) -> MaskScan {
    let [top, left, bottom, right] = clamp_box(bbox, width, height).map(|v| v.round() as i64);
    // The mask is separable, so its bilinear sample is the product of the
    // 1-D samples of the row and column indicators.
    let coverage = |s: f64, lo: i64, hi: i64| {
        let i0 = s.floor();
        let frac = s - i0;
        let inside = |i: i64| if i >= lo && i <= hi { 1.0 } else { 0.0 };
        inside(i0 as i64) * (1.0 - frac) + inside(i0 as i64 + 1) * frac
    };
    let inverse = forward.inverse();
    let mut found: Option<[u32; 4]> = None;
    let mut pixels = 0u64;
    for y in 0..height {
        for x in 0..width {
            let (sx, sy) = inverse.apply(x as f64, y as f64);
            if coverage(sx, left, right) * coverage(sy, top, bottom) > 0.5 {
                let b = found.get_or_insert([y, x, y, x]);
                *b = [b[0].min(y), b[1].min(x), b[2].max(y), b[3].max(x)];
                pixels += 1;
            }
        }
    }
    MaskScan {
        found: found.map(|b| b.map(|v| v as f32)),
        pixels,
        // The clamped, rounded box is never empty: at least one pixel.
        source_pixels: ((bottom - top + 1) * (right - left + 1)) as u64,
    }
}

/// The fraction of `bbox`'s area inside the `width x height` image. Extents
/// are inclusive (`right - left + 1`), as the lesson's boxes are: a box on a
/// single row or column still has an area, and pixel `i` spans `i +/- 0.5`.
fn visible_fraction(bbox: [f32; 4], width: u32, height: u32) -> f32 {
    let [top, left, bottom, right] = bbox;
    let extent = |lo: f32, hi: f32| (hi - lo + 1.0).max(0.0);
    let area = extent(top, bottom) * extent(left, right);
    if area <= 0.0 {
        return 0.0;
    }
    let (max_x, max_y) = ((width - 1) as f32, (height - 1) as f32);
    let inside = extent(top.max(0.0), bottom.min(max_y)) * extent(left.max(0.0), right.min(max_x));
    (inside / area).min(1.0)
}

/// A box after the image's geometric augmentation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MovedBox {
    /// `[top, left, bottom, right]` in the output image's pixels, clipped to it.
    pub bbox: [f32; 4],
    /// The fraction of the moved box's area inside the output image, in 0..=1:
    /// under [`BoxMode::Tight`] (and for draws that move no pixels) the
    /// clipped box's area over the unclipped one's; under [`BoxMode::Mask`]
    /// the warped mask's pixels above 0.5 over the mask's pixels before the
    /// warp (0 when none is left; rotation keeps areas, so a mask wholly
    /// inside stays near 1).
    pub visible: f32,
}

impl MovedBox {
    /// Whether enough of the box is left in the image to keep the object
    /// ([`AugmentParams::min_visible`]); 0 keeps every box.
    pub fn is_kept(&self, min_visible: f32) -> bool {
        self.visible >= min_visible
    }
}

/// Moves `bbox` (`[top, left, bottom, right]` in the input image's pixels)
/// with the image: `forward` is the geometric map the pixels went through
/// ([`AugmentDraw::geometry`]), `None` when they did not move (the box is only
/// clipped). Both the single box and every object of an image go through here.
pub fn move_box(
    bbox: [f32; 4],
    forward: Option<&Affine>,
    box_mode: BoxMode,
    width: u32,
    height: u32,
) -> MovedBox {
    let tight = |moved: [f32; 4]| MovedBox {
        bbox: clamp_box(moved, width, height),
        visible: visible_fraction(moved, width, height),
    };
    match (forward, box_mode) {
        (None, _) => tight(bbox),
        (Some(forward), BoxMode::Tight) => tight(tight_box(bbox, forward)),
        (Some(forward), BoxMode::Mask) => {
            let scan = mask_scan(bbox, forward, width, height);
            match scan.found {
                Some(found) => MovedBox {
                    bbox: found,
                    visible: (scan.pixels as f64 / scan.source_pixels as f64).min(1.0) as f32,
                },
                // A box moved out of the image entirely keeps its tight (clamped) form.
                None => MovedBox {
                    bbox: box_after_affine(bbox, forward, width, height),
                    visible: 0.0,
                },
            }
        }
    }
}

/// Moves every object's box as [`move_box`] does and keeps the objects with at
/// least `min_visible` of their box inside the image, boxes clipped to it, in
/// their order. Returns them and how many were dropped.
pub fn move_objects(
    objects: impl IntoIterator<Item = Object>,
    forward: Option<&Affine>,
    box_mode: BoxMode,
    min_visible: f32,
    width: u32,
    height: u32,
) -> (Vec<Object>, usize) {
    let mut dropped = 0;
    let kept = objects
        .into_iter()
        .filter_map(|object| {
            let moved = move_box(object.bbox, forward, box_mode, width, height);
            if moved.is_kept(min_visible) {
                Some(Object {
                    bbox: moved.bbox,
                    ..object
                })
            } else {
                dropped += 1;
                None
            }
        })
        .collect();
    (kept, dropped)
}

/// fastai's contrast mapping: `c' = -1/(c-1)` for `c < 0`, else `c + 1`.
pub fn lighting_contrast_factor(c: f32) -> f32 {
    if c < 0.0 {
        -1.0 / (c - 1.0)
    } else {
        c + 1.0
    }
}

/// fastai's `lighting`: `clip((x - mu) * c' + mu + b, 0, 1)` for a value `x` in 0..1,
/// with `mu` the mean of the whole image.
pub fn lighting(x: f32, mu: f32, b: f32, c: f32) -> f32 {
    ((x - mu) * lighting_contrast_factor(c) + mu + b).clamp(0.0, 1.0)
}

/// Writes packed RGB `rgb` as CHW f32 into `out` (`3 * pixels` values),
/// normalised by `norm`, after the lesson's lighting with `(b, c)` when given.
pub fn normalize_into(
    rgb: &[u8],
    lighting_bc: Option<(f32, f32)>,
    norm: &Normalisation,
    out: &mut [f32],
) {
    let pixels = rgb.len() / 3;
    assert_eq!(
        out.len(),
        3 * pixels,
        "output holds {} values, the image {}",
        out.len(),
        3 * pixels
    );
    let mu = lighting_bc.map(|_| {
        // u32 sums of at most 2^16 bytes cannot overflow and vectorise well.
        let sum: u64 = rgb
            .chunks(1 << 16)
            .map(|chunk| chunk.iter().map(|&v| v as u32).sum::<u32>() as u64)
            .sum();
        (sum as f64 / (rgb.len() as f64 * 255.0)) as f32
    });
    // Every output value depends only on its channel and input byte, so a
    // 3x256 table per image does lighting and normalisation at once.
    let mut lut = [[0f32; 256]; 3];
    for (ch, table) in lut.iter_mut().enumerate() {
        for (v, slot) in table.iter_mut().enumerate() {
            let mut x = v as f32 / 255.0;
            if let (Some((b, c)), Some(mu)) = (lighting_bc, mu) {
                x = lighting(x, mu, b, c);
            }
            *slot = (x - norm.mean[ch]) / norm.std[ch];
        }
    }
    let (red, rest) = out.split_at_mut(pixels);
    let (green, blue) = rest.split_at_mut(pixels);
    for ((px, (r, g)), b) in rgb
        .chunks_exact(3)
        .zip(red.iter_mut().zip(green.iter_mut()))
        .zip(blue.iter_mut())
    {
        *r = lut[0][px[0] as usize];
        *g = lut[1][px[1] as usize];
        *b = lut[2][px[2] as usize];
    }
}

/// The inverse of the normalisation `norm` for one `3 x size x size` image (the
/// first such values of `x`), for display.
pub fn denorm(x: &[f32], size: u32, norm: &Normalisation) -> RgbImage {
    let pixels = (size * size) as usize;
    assert!(
        x.len() >= 3 * pixels,
        "need {} values for a {size}x{size} image, got {}",
        3 * pixels,
        x.len()
    );
    let mut img = RgbImage::new(size, size);
    for (p, px) in img.pixels_mut().enumerate() {
        for ch in 0..3 {
            let v = x[ch * pixels + p] * norm.std[ch] + norm.mean[ch];
            px.0[ch] = (v * 255.0).round().clamp(0.0, 255.0) as u8;
        }
    }
    img
}

/// The per-image pixel work after decoding: the geometric part of `draw` (if
/// any) into `scratch`, then lighting and normalisation into `out`. Returns
/// the geometric map the pixels went through, for the boxes ([`move_box`]).
pub(crate) fn augment_into(
    src: &[u8],
    (width, height): (u32, u32),
    draw: Option<&AugmentDraw>,
    norm: &Normalisation,
    scratch: &mut Vec<u8>,
    out: &mut [f32],
) -> Option<Affine> {
    let forward = draw.and_then(|draw| draw.geometry(width, height));
    let pixels = match (draw, &forward) {
        (Some(draw), Some(forward)) => {
            scratch.resize(src.len(), 0);
            if draw.is_flip_only() {
                // The warp would reproduce the mirrored rows exactly, at
                // several times the cost.
                hflip_into(src, width, scratch);
            } else {
                warp_affine_reflect(src, width, height, forward, scratch);
            }
            &scratch[..]
        }
        _ => src,
    };
    normalize_into(pixels, draw.map(|d| (d.brightness, d.contrast)), norm, out);
    forward
}

/// One squashed image through the loader's augmentation (`draw = None`:
/// normalisation only). Returns CHW f32 (`3 * w * h`, see [`denorm`]) and the
/// box in the image's pixel coordinates. For an image's objects, pass
/// `draw.geometry(w, h)` to [`move_objects`].
pub fn augment_one(
    img: &RgbImage,
    bbox: Option<[f32; 4]>,
    draw: Option<&AugmentDraw>,
    box_mode: BoxMode,
    norm: &Normalisation,
) -> (Vec<f32>, Option<[f32; 4]>) {
    let (w, h) = img.dimensions();
    let mut out = vec![0f32; 3 * (w * h) as usize];
    let mut scratch = Vec::new();
    let forward = augment_into(img.as_raw(), (w, h), draw, norm, &mut scratch, &mut out);
    let bbox = bbox.map(|bbox| move_box(bbox, forward.as_ref(), box_mode, w, h).bbox);
    (out, bbox)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reflect_repeats_the_edge_pixel() {
        let n = 5;
        let got: Vec<usize> = (-3..8).map(|i| reflect(i, n)).collect();
        assert_eq!(got, [2, 1, 0, 0, 1, 2, 3, 4, 4, 3, 2]);
    }

    #[test]
    fn reflect_without_division_matches_the_general_rule() {
        for n in [1i64, 2, 5, 224] {
            for i in -5 * n..5 * n {
                let period = 2 * n;
                let j = i.rem_euclid(period);
                let want = (if j >= n { period - 1 - j } else { j }) as usize;
                assert_eq!(reflect(i, n), want, "i = {i}, n = {n}");
            }
        }
    }

    #[test]
    fn the_simd_warp_matches_the_scalar_warp_exactly() {
        let (w, h) = (61u32, 47u32);
        let mut state = 12345u32;
        let src: Vec<u8> = (0..w * h * 3)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 24) as u8
            })
            .collect();
        for deg in [-10.0, -7.3, -0.4, 0.0, 0.9, 3.0, 9.99, 45.0] {
            for flip in [false, true] {
                let mut forward = Affine::rotation(deg, (w / 2) as f64, (h / 2) as f64);
                if flip {
                    forward = forward.then(&Affine::hflip(w));
                }
                let mut simd = vec![0u8; src.len()];
                let mut scalar = vec![0u8; src.len()];
                warp_affine_reflect_with(&src, w, h, &forward, &mut simd, true);
                warp_affine_reflect_with(&src, w, h, &forward, &mut scalar, false);
                assert!(simd == scalar, "{deg} degrees, flip {flip}");
            }
        }
    }

    #[test]
    fn affine_inverse_and_composition_round_trip() {
        let m = Affine::rotation(7.0, 112.0, 112.0).then(&Affine::hflip(224));
        let back = m.then(&m.inverse());
        for (got, want) in back
            .0
            .iter()
            .flatten()
            .zip(Affine::IDENTITY.0.iter().flatten())
        {
            assert!((got - want).abs() < 1e-12, "{back:?}");
        }
    }
}
