//! Single-image transforms: geometry, boxes, lighting, normalisation, decoding.

mod util;

use augment::{
    augment_one, box_after_affine, box_before_affine, decode_squashed, denorm, hflip_into,
    lighting, mask_box_after_affine, normalize_into, warp_affine_reflect, Affine, AugmentDraw,
    AugmentParams, BoxMode, IMAGENET_MEAN, IMAGENET_STD,
};
use image::RgbImage;
use proptest::prelude::*;
use rand::SeedableRng;

fn warp(img: &RgbImage, forward: &Affine) -> RgbImage {
    let (w, h) = img.dimensions();
    let mut out = vec![0u8; img.as_raw().len()];
    warp_affine_reflect(img.as_raw(), w, h, forward, &mut out);
    RgbImage::from_raw(w, h, out).unwrap()
}

#[test]
fn the_flip_fast_path_is_the_warp_exactly() {
    // The loader mirrors rows for flip-only draws instead of warping: the
    // same bytes, for odd and even widths, at the AVX2 group size and beyond.
    for (w, h) in [(37, 29), (224, 224), (8, 3), (9, 5), (1, 4)] {
        let img = util::picture(w, h, 7);
        let mut mirrored = vec![0u8; img.as_raw().len()];
        hflip_into(img.as_raw(), w, &mut mirrored);
        assert_eq!(
            mirrored,
            warp(&img, &Affine::hflip(w)).into_raw(),
            "{w}x{h}"
        );
    }
    // and augment_one (the loader's per-image work) with a flip-only draw
    let img = util::picture(64, 48, 2);
    let draw = AugmentDraw {
        rotate_deg: 0.0,
        flip: true,
        brightness: 0.03,
        contrast: -0.02,
        ..AugmentDraw::NONE
    };
    let (x, bbox) = augment_one(
        &img,
        Some([3.0, 4.0, 20.0, 10.0]),
        Some(&draw),
        BoxMode::Tight,
        &augment::Normalisation::IMAGENET,
    );
    let warped = warp(&img, &draw.affine(64, 48));
    let (expected, _) = augment_one(
        &warped,
        None,
        Some(&AugmentDraw {
            flip: false,
            ..draw
        }),
        BoxMode::Tight,
        &augment::Normalisation::IMAGENET,
    );
    assert_eq!(x, expected);
    assert_eq!(
        bbox.unwrap(),
        box_after_affine([3.0, 4.0, 20.0, 10.0], &draw.affine(64, 48), 64, 48)
    );
}

#[test]
fn flipping_twice_gives_back_the_image_and_the_box() {
    let img = util::picture(37, 29, 3);
    let flip = Affine::hflip(37);
    let once = warp(&img, &flip);
    assert_ne!(once, img, "a flip must change an asymmetric picture");
    assert_eq!(warp(&once, &flip), img);
    // the flip itself: column x comes from column w-1-x
    assert_eq!(once.get_pixel(0, 5), img.get_pixel(36, 5));

    let bbox = [3.0, 4.0, 20.0, 10.0];
    let flipped = box_after_affine(bbox, &flip, 37, 29);
    assert_eq!(flipped, [3.0, 26.0, 20.0, 32.0]);
    assert_eq!(box_after_affine(flipped, &flip, 37, 29), bbox);
}

#[test]
fn rotating_by_zero_degrees_changes_nothing() {
    let img = util::picture(40, 30, 1);
    let rotate0 = Affine::rotation(0.0, 20.0, 15.0);
    assert_eq!(warp(&img, &rotate0), img);
    let bbox = [2.5, 3.0, 17.0, 30.0];
    assert_eq!(box_after_affine(bbox, &rotate0, 40, 30), bbox);
    assert_eq!(
        mask_box_after_affine([2.0, 3.0, 17.0, 30.0], &rotate0, 40, 30),
        Some([2.0, 3.0, 17.0, 30.0])
    );
}

#[test]
fn positive_angles_turn_counter_clockwise_like_opencv() {
    // A single bright pixel 8 columns right of the centre of a 33x33 image
    // ends up 8 rows above the centre after +90 degrees, and the box with it.
    let mut img = RgbImage::new(33, 33);
    img.put_pixel(24, 16, image::Rgb([255, 255, 255]));
    let rotate = Affine::rotation(90.0, 16.0, 16.0);
    let out = warp(&img, &rotate);
    let brightest = out
        .enumerate_pixels()
        .max_by_key(|(_, _, p)| p.0[0])
        .map(|(x, y, _)| (x, y))
        .unwrap();
    assert_eq!(brightest, (16, 8));
    let moved = box_after_affine([16.0, 24.0, 16.0, 24.0], &rotate, 33, 33);
    for (got, want) in moved.iter().zip([8.0, 16.0, 8.0, 16.0]) {
        assert!((got - want).abs() < 1e-4, "{moved:?}");
    }
}

/// Bilinear sampling with a reflected border in f64, the textbook way.
fn reference_warp(img: &RgbImage, forward: &Affine) -> RgbImage {
    let (w, h) = img.dimensions();
    let reflect = |i: i64, n: i64| {
        let i = i.rem_euclid(2 * n);
        (if i >= n { 2 * n - 1 - i } else { i }) as u32
    };
    let inverse = forward.inverse();
    RgbImage::from_fn(w, h, |x, y| {
        let (sx, sy) = inverse.apply(x as f64, y as f64);
        let (x0, y0) = (sx.floor(), sy.floor());
        let (fx, fy) = (sx - x0, sy - y0);
        let tap = |dx: i64, dy: i64, ch: usize| {
            img.get_pixel(
                reflect(x0 as i64 + dx, w as i64),
                reflect(y0 as i64 + dy, h as i64),
            )
            .0[ch] as f64
        };
        image::Rgb(std::array::from_fn(|ch| {
            let top = tap(0, 0, ch) * (1.0 - fx) + tap(1, 0, ch) * fx;
            let bottom = tap(0, 1, ch) * (1.0 - fx) + tap(1, 1, ch) * fx;
            (top * (1.0 - fy) + bottom * fy).round() as u8
        }))
    })
}

#[test]
fn the_warp_is_bilinear_sampling_within_one_level() {
    let img = util::picture(61, 47, 6);
    for (deg, flip) in [(10.0, false), (-9.3, true), (3.7, false), (45.0, true)] {
        let draw = AugmentDraw {
            rotate_deg: deg,
            flip,
            brightness: 0.0,
            contrast: 0.0,
            ..AugmentDraw::NONE
        };
        let forward = draw.affine(61, 47);
        let (got, want) = (warp(&img, &forward), reference_warp(&img, &forward));
        let worst = got
            .as_raw()
            .iter()
            .zip(want.as_raw())
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(
            worst <= 1,
            "{deg} deg, flip {flip}: differs by up to {worst}"
        );
    }
}

#[test]
fn the_border_is_reflected() {
    // Shifting right by 2 columns: the new columns 0 and 1 mirror columns 1 and 0.
    let img = util::picture(20, 10, 2);
    let shift = Affine([[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]]);
    let out = warp(&img, &shift);
    for y in 0..10 {
        assert_eq!(out.get_pixel(0, y), img.get_pixel(1, y));
        assert_eq!(out.get_pixel(1, y), img.get_pixel(0, y));
        assert_eq!(out.get_pixel(2, y), img.get_pixel(0, y));
        assert_eq!(out.get_pixel(19, y), img.get_pixel(17, y));
    }
}

#[test]
fn box_of_a_rotated_rectangle_matches_the_analytic_extent() {
    // A w x h rectangle centred on the rotation centre turned by theta spans
    // w|cos| + h|sin| across and w|sin| + h|cos| down.
    let (size, cx, cy) = (224u32, 112.0f32, 112.0f32);
    for (deg, half_w, half_h) in [
        (10.0f32, 50.0f32, 30.0f32),
        (-7.5, 20.0, 60.0),
        (30.0, 40.0, 40.0),
        (-45.0, 10.0, 70.0),
    ] {
        let bbox = [cy - half_h, cx - half_w, cy + half_h, cx + half_w];
        let rotate = Affine::rotation(deg as f64, cx as f64, cy as f64);
        let (sin, cos) = deg.to_radians().sin_cos();
        let half_across = half_w * cos.abs() + half_h * sin.abs();
        let half_down = half_w * sin.abs() + half_h * cos.abs();
        let want = [
            cy - half_down,
            cx - half_across,
            cy + half_down,
            cx + half_across,
        ];
        let tight = box_after_affine(bbox, &rotate, size, size);
        for (got, want) in tight.iter().zip(want) {
            assert!(
                (got - want).abs() < 1e-3,
                "{deg} deg: tight {tight:?}, analytic {want:?}"
            );
        }
        // The mask box samples pixel centres of the same rotated rectangle.
        let mask = mask_box_after_affine(bbox, &rotate, size, size).unwrap();
        for (got, want) in mask.iter().zip(want) {
            assert!(
                (got - want).abs() <= 1.5,
                "{deg} deg: mask {mask:?}, analytic {want:?}"
            );
        }
    }
}

proptest! {
    #[test]
    fn boxes_stay_inside_the_image(
        size in 8u32..300,
        corners in prop::array::uniform4(0.0f32..1.0),
        deg in -45.0f32..45.0,
        flip: bool,
        mask: bool,
    ) {
        let max = (size - 1) as f32;
        let (top, bottom) = (corners[0].min(corners[2]) * max, corners[0].max(corners[2]) * max);
        let (left, right) = (corners[1].min(corners[3]) * max, corners[1].max(corners[3]) * max);
        let draw = AugmentDraw { rotate_deg: deg, flip, ..AugmentDraw::NONE };
        let forward = draw.affine(size, size);
        let bbox = if mask {
            mask_box_after_affine([top, left, bottom, right], &forward, size, size)
                .unwrap_or_else(|| box_after_affine([top, left, bottom, right], &forward, size, size))
        } else {
            box_after_affine([top, left, bottom, right], &forward, size, size)
        };
        prop_assert!(bbox.iter().all(|v| (0.0..=max).contains(v)), "{bbox:?} outside 0..={max}");
        prop_assert!(bbox[0] <= bbox[2] && bbox[1] <= bbox[3], "{bbox:?} inverted");
    }
}

proptest! {
    #[test]
    fn a_tight_box_maps_back_to_the_box_it_was(
        corners in prop::array::uniform4(0.3f32..0.7),
        deg in -30.0f32..30.0,
        flip: bool,
        zoom in 1.0f32..1.3,
        zoom_at in prop::array::uniform2(0.0f32..1.0),
    ) {
        // What test-time augmentation does with a box predicted on a copy:
        // the tight box of a rotated, flipped, zoomed box maps back to the box.
        let size = 224u32;
        let max = (size - 1) as f32;
        let (top, bottom) = (corners[0].min(corners[2]) * max, corners[0].max(corners[2]) * max);
        let (left, right) = (corners[1].min(corners[3]) * max, corners[1].max(corners[3]) * max);
        let draw = AugmentDraw { rotate_deg: deg, flip, zoom, zoom_at, ..AugmentDraw::NONE };
        let forward = draw.affine(size, size);
        let bbox = [top, left, bottom, right];
        let moved = box_after_affine(bbox, &forward, size, size);
        // Only where the image's edge did not clip the moved box is it invertible.
        prop_assume!(moved.iter().all(|v| *v > 0.0 && *v < max));
        let back = box_before_affine(moved, &forward);
        for (got, want) in back.iter().zip(bbox) {
            prop_assert!((got - want).abs() < 1e-2, "{back:?} against {bbox:?} ({draw:?})");
        }
    }
}

#[test]
fn a_box_thinner_than_any_tight_box_maps_back_to_a_line_and_45_degrees_to_the_corners() {
    // Rotated by 10 degrees, a 10 x 200 box is the tight box of no box (every
    // tight box of a 200-high box is at least 200 sin 10 = 35 wide): width 0.
    let forward = Affine::rotation(10.0, 112.0, 112.0);
    let [top, left, bottom, right] = box_before_affine([12.0, 107.0, 212.0, 117.0], &forward);
    assert!((right - left).abs() < 1e-4, "{left}..{right}");
    assert!(bottom - top > 200.0, "{top}..{bottom}");
    // At 45 degrees every square's tight box is the same shape: no unique answer,
    // so the corners are mapped back (a box no smaller than the one moved).
    let forward = Affine::rotation(45.0, 112.0, 112.0);
    let back = box_before_affine([62.0, 62.0, 162.0, 162.0], &forward);
    assert!(
        back[2] - back[0] >= 100.0 && back[3] - back[1] >= 100.0,
        "{back:?}"
    );
}

#[test]
fn lighting_follows_the_formula_on_known_pixels() {
    // Two pixels, black and white: the image mean is exactly 0.5.
    let rgb = [0u8, 0, 0, 255, 255, 255];
    // c = -0.05 -> c' = -1/(c-1) = 1/1.05; b = 0.02:
    //   black: (0 - 0.5)/1.05 + 0.5 + 0.02 = 0.0438095
    //   white: (1 - 0.5)/1.05 + 0.5 + 0.02 = 0.9961905
    // c = 0.05 -> c' = 1.05; b = 0.05:
    //   black: -0.525 + 0.55 = 0.025;  white: 0.525 + 0.55 = 1.075, clipped to 1
    // c = 0.05, b = -0.05:
    //   black: -0.525 + 0.45 = -0.075, clipped to 0;  white: 0.525 + 0.45 = 0.975
    for (b, c, black, white) in [
        (0.02f32, -0.05f32, 0.0438095f32, 0.9961905f32),
        (0.05, 0.05, 0.025, 1.0),
        (-0.05, 0.05, 0.0, 0.975),
    ] {
        assert!((lighting(0.0, 0.5, b, c) - black).abs() < 1e-6);
        assert!((lighting(1.0, 0.5, b, c) - white).abs() < 1e-6);
        let mut out = [0f32; 6];
        normalize_into(
            &rgb,
            Some((b, c)),
            &augment::Normalisation::IMAGENET,
            &mut out,
        );
        for ch in 0..3 {
            let normalised = |v: f32| (v - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch];
            assert!(
                (out[ch * 2] - normalised(black)).abs() < 1e-5,
                "channel {ch} black: {out:?}"
            );
            assert!(
                (out[ch * 2 + 1] - normalised(white)).abs() < 1e-5,
                "channel {ch} white: {out:?}"
            );
        }
    }
}

#[test]
fn normalisation_is_imagenet_and_chw() {
    // One pixel (R, G, B) = (255, 0, 128) -> CHW [(1-.485)/.229, (0-.456)/.224, (128/255-.406)/.225].
    let mut out = [0f32; 3];
    normalize_into(
        &[255, 0, 128],
        None,
        &augment::Normalisation::IMAGENET,
        &mut out,
    );
    let want = [2.2489083, -2.0357143, 0.4264924];
    for (got, want) in out.iter().zip(want) {
        assert!((got - want).abs() < 1e-5, "{out:?}");
    }
}

#[test]
fn denorm_inverts_the_normalisation() {
    let img = util::picture(24, 24, 5);
    let (x, _) = augment_one(
        &img,
        None,
        None,
        BoxMode::Tight,
        &augment::Normalisation::IMAGENET,
    );
    assert_eq!(denorm(&x, 24, &augment::Normalisation::IMAGENET), img);
}

#[test]
fn augment_one_moves_the_box_with_the_pixels() {
    // A white square on black: after any draw, the box must cover the white pixels.
    let mut img = RgbImage::new(64, 64);
    for y in 20..30 {
        for x in 10..40 {
            img.put_pixel(x, y, image::Rgb([255, 255, 255]));
        }
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    for _ in 0..20 {
        let draw = AugmentDraw::sample(&AugmentParams::default(), &mut rng);
        let draw = AugmentDraw {
            brightness: 0.0,
            contrast: 0.0,
            ..draw
        };
        let (x, bbox) = augment_one(
            &img,
            Some([20.0, 10.0, 29.0, 39.0]),
            Some(&draw),
            BoxMode::Tight,
            &augment::Normalisation::IMAGENET,
        );
        let [top, left, bottom, right] = bbox.unwrap();
        let out = denorm(&x, 64, &augment::Normalisation::IMAGENET);
        for (px, py, p) in out.enumerate_pixels() {
            if p.0[0] > 200 {
                let (px, py) = (px as f32, py as f32);
                assert!(
                    py >= top - 1.0 && py <= bottom + 1.0 && px >= left - 1.0 && px <= right + 1.0,
                    "white pixel ({py}, {px}) outside box {:?} for {draw:?}",
                    bbox
                );
            }
        }
    }
}

#[test]
fn draws_follow_the_lesson_distribution() {
    let params = AugmentParams::default();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let draws: Vec<AugmentDraw> = (0..20_000)
        .map(|_| AugmentDraw::sample(&params, &mut rng))
        .collect();
    let share = |f: &dyn Fn(&AugmentDraw) -> bool| {
        draws.iter().filter(|d| f(d)).count() as f64 / draws.len() as f64
    };
    assert!((share(&|d| d.rotate_deg != 0.0) - 0.75).abs() < 0.02);
    assert!((share(&|d| d.flip) - 0.5).abs() < 0.02);
    assert!(draws.iter().all(|d| d.rotate_deg.abs() <= 10.0
        && d.brightness.abs() <= 0.05
        && d.contrast.abs() <= 0.05));
    assert!(
        share(&|d| d.rotate_deg > 5.0) > 0.15,
        "angles should spread over the range"
    );
}

#[test]
fn the_zoom_is_drawn_after_the_lessons_draws_and_checked() {
    // The lesson's draws are the same with or without a zoom, so turning the
    // zoom on changes nothing else a run saw.
    let zooming = AugmentParams {
        max_zoom: 1.5,
        ..AugmentParams::default()
    };
    let mut plain_rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut zoom_rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let mut zooms = Vec::new();
    for _ in 0..2000 {
        let plain = AugmentDraw::sample(&AugmentParams::default(), &mut plain_rng);
        let zoomed = AugmentDraw::sample(&zooming, &mut zoom_rng);
        assert_eq!(plain.zoom, 1.0);
        assert_eq!(
            AugmentDraw {
                zoom: 1.0,
                zoom_at: plain.zoom_at,
                ..zoomed
            },
            plain
        );
        assert!((1.0..=1.5).contains(&zoomed.zoom));
        assert!(zoomed.zoom_at.iter().all(|a| (0.0..=1.0).contains(a)));
        zooms.push(zoomed.zoom);
    }
    let mean = zooms.iter().sum::<f32>() / zooms.len() as f32;
    assert!((mean - 1.25).abs() < 0.02, "mean zoom {mean}");

    assert_eq!(AugmentParams::default().check(), Ok(()));
    for (params, says) in [
        (
            AugmentParams {
                max_zoom: 0.8,
                ..AugmentParams::default()
            },
            "max_zoom",
        ),
        (
            AugmentParams {
                max_zoom: f32::NAN,
                ..AugmentParams::default()
            },
            "max_zoom",
        ),
        (
            AugmentParams {
                flip_p: 1.5,
                ..AugmentParams::default()
            },
            "flip_p",
        ),
        (
            AugmentParams {
                rotate_deg: -1.0,
                ..AugmentParams::default()
            },
            "rotate_deg",
        ),
    ] {
        let e = params.check().unwrap_err();
        assert!(e.contains(says), "{e}");
    }
}

#[test]
fn params_deserialise_from_a_pipeline_table_with_the_lessons_defaults() {
    let params: AugmentParams = toml::from_str("rotate_deg = 5.0\nbox_mode = \"mask\"").unwrap();
    assert_eq!(
        params,
        AugmentParams {
            rotate_deg: 5.0,
            box_mode: BoxMode::Mask,
            ..AugmentParams::default()
        }
    );
    let defaults: AugmentParams = serde_json::from_str("{}").unwrap();
    assert_eq!(
        (
            defaults.rotate_deg,
            defaults.rotate_p,
            defaults.lighting_b,
            defaults.lighting_c,
            defaults.flip_p,
            defaults.max_zoom,
            defaults.box_mode
        ),
        (10.0, 0.75, 0.05, 0.05, 0.5, 1.0, BoxMode::Tight)
    );
    assert!(
        toml::from_str::<AugmentParams>("rotate = 3").is_err(),
        "unknown keys are refused"
    );
}

#[test]
fn scaled_jpeg_decoding_keeps_the_picture() {
    // 1000x750 decodes at 1/2 (500x375) before the squash; compare with a
    // full-size resize of the original picture.
    let dir = tempfile::tempdir().unwrap();
    let img = util::picture(1000, 750, 9);
    let path = dir.path().join("big.jpg");
    util::write_jpeg(&path, &img);
    let squashed = decode_squashed(&path, 224).unwrap();
    assert_eq!(squashed.orig_size, (750, 1000));
    assert_eq!(squashed.image.dimensions(), (224, 224));
    let reference = image::imageops::resize(&img, 224, 224, image::imageops::FilterType::Triangle);
    let mean_abs_diff = squashed
        .image
        .as_raw()
        .iter()
        .zip(reference.as_raw())
        .map(|(a, b)| (*a as f64 - *b as f64).abs())
        .sum::<f64>()
        / reference.as_raw().len() as f64;
    assert!(mean_abs_diff < 4.0, "mean abs difference {mean_abs_diff}");
}

#[test]
fn png_images_load_too() {
    let dir = tempfile::tempdir().unwrap();
    let square = util::picture(20, 20, 4);
    let path = dir.path().join("square.png");
    square.save(&path).unwrap();
    let squashed = decode_squashed(&path, 20).unwrap();
    assert_eq!(
        (squashed.orig_size, squashed.image),
        ((20, 20), square),
        "PNG is lossless and needs no resize"
    );

    let wide = dir.path().join("wide.png");
    util::picture(30, 20, 4).save(&wide).unwrap();
    let squashed = decode_squashed(&wide, 16).unwrap();
    assert_eq!(
        (squashed.orig_size, squashed.image.dimensions()),
        ((20, 30), (16, 16))
    );
}
