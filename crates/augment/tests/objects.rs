//! Many objects per image: their boxes move exactly as the single box does,
//! objects mostly moved out of the image are dropped and counted.

mod util;

use std::sync::Arc;

use augment::{
    augment_one, box_after_affine, mask_box_after_affine, move_box, move_objects, squash_box,
    Affine, AugmentDraw, AugmentParams, Batch, BoxMode, Item, Loader, LoaderConfig, Normalisation,
    Object,
};
use rand::SeedableRng;

const SIZE: u32 = 32;

fn object(bbox: [f32; 4], class: i64) -> Object {
    Object { bbox, class }
}

/// Shifts right by `dx` columns: pixel-exact, so visible fractions are exact.
fn shift_right(dx: f64) -> Affine {
    Affine([[1.0, 0.0, dx], [0.0, 1.0, 0.0]])
}

#[test]
fn an_object_identical_to_the_bbox_gets_the_same_box_bit_for_bit() {
    let params = AugmentParams {
        rotate_deg: 30.0,
        ..AugmentParams::default()
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    for (size, bbox) in [
        (64u32, [20.0, 10.0, 29.0, 39.0]),
        (37, [-3.5, 30.2, 12.7, 40.0]),
        (48, [0.0, 0.0, 47.0, 47.0]),
        (40, [1.0, 2.0, 3.0, 2.0]),
    ] {
        let img = util::picture(size, size, 2);
        for _ in 0..12 {
            let draw = AugmentDraw::sample(&params, &mut rng);
            for mode in [BoxMode::Tight, BoxMode::Mask] {
                for draw in [None, Some(&draw)] {
                    let (_, single) =
                        augment_one(&img, Some(bbox), draw, mode, &Normalisation::IMAGENET);
                    let forward = draw.and_then(|d| d.geometry(size, size));
                    let (kept, dropped) =
                        move_objects([object(bbox, 5)], forward.as_ref(), mode, 0.0, size, size);
                    assert_eq!(dropped, 0);
                    let single = single.unwrap().map(f32::to_bits);
                    assert_eq!(kept[0].bbox.map(f32::to_bits), single, "{draw:?} {mode:?}");
                    assert_eq!(kept[0].class, 5);
                    let moved = move_box(bbox, forward.as_ref(), mode, size, size);
                    assert_eq!(moved.bbox.map(f32::to_bits), single);
                }
            }
        }
    }
}

#[test]
fn move_box_is_the_existing_box_transform() {
    let bbox = [5.0, 6.0, 20.0, 30.0];
    let forward = AugmentDraw {
        rotate_deg: 7.5,
        flip: true,
        brightness: 0.0,
        contrast: 0.0,
        ..AugmentDraw::NONE
    }
    .affine(40, 40);
    assert_eq!(
        move_box(bbox, Some(&forward), BoxMode::Tight, 40, 40).bbox,
        box_after_affine(bbox, &forward, 40, 40)
    );
    assert_eq!(
        Some(move_box(bbox, Some(&forward), BoxMode::Mask, 40, 40).bbox),
        mask_box_after_affine(bbox, &forward, 40, 40)
    );
    // No geometry: only clipped.
    let outside = [-4.0, 10.0, 12.0, 45.0];
    assert_eq!(
        move_box(outside, None, BoxMode::Mask, 40, 40).bbox,
        [0.0, 10.0, 12.0, 39.0]
    );
}

#[test]
fn objects_follow_a_flip() {
    let draw = AugmentDraw {
        rotate_deg: 0.0,
        flip: true,
        brightness: 0.0,
        contrast: 0.0,
        ..AugmentDraw::NONE
    };
    let forward = draw.geometry(SIZE, SIZE);
    assert!(forward.is_some());
    assert_eq!(AugmentDraw::NONE.geometry(SIZE, SIZE), None);
    let objects = [
        object([3.0, 4.0, 20.0, 10.0], 1),
        object([0.0, 0.0, 31.0, 31.0], 2),
        object([10.0, 25.0, 12.0, 31.0], 3),
    ];
    for mode in [BoxMode::Tight, BoxMode::Mask] {
        let (kept, dropped) = move_objects(objects, forward.as_ref(), mode, 0.25, SIZE, SIZE);
        assert_eq!(dropped, 0);
        // column x -> 31 - x: left and right swap
        assert_eq!(
            kept,
            [
                object([3.0, 21.0, 20.0, 27.0], 1),
                object([0.0, 0.0, 31.0, 31.0], 2),
                object([10.0, 0.0, 12.0, 6.0], 3),
            ],
            "{mode:?}"
        );
    }
}

/// Two white rectangles on black, one object each, through 20 draws of
/// `params` (lighting off): every white pixel of the augmented image lies in
/// (or within a pixel of) a kept object's box. Returns each draw with how many
/// objects were kept and dropped at `min_visible`.
fn white_pixels_stay_in_their_boxes(
    params: &AugmentParams,
    seed: u64,
    min_visible: f32,
) -> Vec<(AugmentDraw, usize, usize)> {
    let mut img = image::RgbImage::new(64, 64);
    let rects = [(20u32, 10u32, 29u32, 25u32), (40, 35, 50, 55)];
    for &(top, left, bottom, right) in &rects {
        for y in top..=bottom {
            for x in left..=right {
                img.put_pixel(x, y, image::Rgb([255, 255, 255]));
            }
        }
    }
    let objects = rects.map(|(t, l, b, r)| object([t, l, b, r].map(|v| v as f32), t as i64));
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..20)
        .map(|_| {
            let draw = AugmentDraw {
                brightness: 0.0,
                contrast: 0.0,
                ..AugmentDraw::sample(params, &mut rng)
            };
            let (x, _) = augment_one(
                &img,
                None,
                Some(&draw),
                BoxMode::Tight,
                &Normalisation::IMAGENET,
            );
            let out = augment::denorm(&x, 64, &Normalisation::IMAGENET);
            let forward = draw.geometry(64, 64);
            let (kept, dropped) = move_objects(
                objects,
                forward.as_ref(),
                BoxMode::Tight,
                min_visible,
                64,
                64,
            );
            for (px, py, p) in out.enumerate_pixels() {
                if p.0[0] <= 200 {
                    continue;
                }
                let (px, py) = (px as f32, py as f32);
                let covered = kept.iter().any(|o| {
                    let [top, left, bottom, right] = o.bbox;
                    py >= top - 1.0 && py <= bottom + 1.0 && px >= left - 1.0 && px <= right + 1.0
                });
                assert!(
                    covered,
                    "white pixel ({py}, {px}) in no box {kept:?} for {draw:?}"
                );
            }
            (draw, kept.len(), dropped)
        })
        .collect()
}

#[test]
fn objects_follow_a_rotation_with_the_pixels() {
    // Each object's box covers the white pixels nearest its centre, and both
    // objects stay.
    for (draw, kept, dropped) in
        white_pixels_stay_in_their_boxes(&AugmentParams::default(), 11, 0.25)
    {
        assert_eq!((kept, dropped), (2, 0), "{draw:?}");
    }
}

#[test]
fn a_zoom_fills_the_picture_with_its_window() {
    // Zoom 2 in a 32 x 32 image: a 16-pixel window fills the picture, its
    // outer pixel edges on the picture's, wherever the window sits.
    for (at, first) in [(0.0, 0.0), (1.0, 16.0), (0.5, 8.0)] {
        let draw = AugmentDraw {
            zoom: 2.0,
            zoom_at: [at, at],
            ..AugmentDraw::NONE
        };
        assert!(draw.is_geometric() && !draw.is_flip_only());
        let forward = draw.geometry(SIZE, SIZE).unwrap();
        assert_eq!(
            forward.apply(first - 0.5, first - 0.5),
            (-0.5, -0.5),
            "{at}"
        );
        assert_eq!(
            forward.apply(first + 15.5, first + 15.5),
            (31.5, 31.5),
            "{at}"
        );
    }
    // An object in the window grows, one straddling its edge is clipped, one
    // outside it is dropped.
    let draw = AugmentDraw {
        zoom: 2.0,
        zoom_at: [0.0, 0.0],
        ..AugmentDraw::NONE
    };
    let objects = [
        object([4.0, 2.0, 7.0, 9.0], 1),
        object([12.0, 12.0, 19.0, 19.0], 2),
        object([20.0, 20.0, 30.0, 30.0], 3),
    ];
    let forward = draw.geometry(SIZE, SIZE);
    let (kept, dropped) = move_objects(objects, forward.as_ref(), BoxMode::Tight, 0.25, SIZE, SIZE);
    assert_eq!(dropped, 1);
    assert_eq!(
        kept,
        [
            object([8.5, 4.5, 14.5, 18.5], 1),
            object([24.5, 24.5, 31.0, 31.0], 2),
        ]
    );
}

#[test]
fn objects_follow_a_zoom_with_the_pixels() {
    // With zooms up to 1.5 on top of the lesson's draws; min_visible 0, so an
    // object mostly zoomed out of view keeps its clipped box.
    let params = AugmentParams {
        max_zoom: 1.5,
        ..AugmentParams::default()
    };
    let draws = white_pixels_stay_in_their_boxes(&params, 12, 0.0);
    let zoomed = draws.iter().filter(|(draw, ..)| draw.zoom > 1.2).count();
    assert!(
        zoomed >= 5,
        "only {zoomed} of 20 draws zoomed by more than 1.2"
    );
}

#[test]
fn an_object_moved_out_of_the_image_is_dropped_and_counted() {
    // Shifted right by 25 columns in a 32 x 32 image:
    let objects = [
        object([20.0, 10.0, 25.0, 13.0], 1), // to columns 35..=38: wholly out
        object([0.0, 0.0, 9.0, 9.0], 2),     // to 25..=34: 7 of 10 columns left
        object([3.0, 2.0, 5.0, 30.0], 3),    // to 27..=55: 5 of 29 columns left
    ];
    let forward = shift_right(25.0);
    for mode in [BoxMode::Tight, BoxMode::Mask] {
        let moved = move_box(objects[0].bbox, Some(&forward), mode, SIZE, SIZE);
        assert_eq!(moved.visible, 0.0, "{mode:?}");
        assert!(!moved.is_kept(0.25) && moved.is_kept(0.0));
        let (kept, dropped) = move_objects(objects, Some(&forward), mode, 0.25, SIZE, SIZE);
        assert_eq!(dropped, 2, "{mode:?}");
        assert_eq!(kept, [object([0.0, 25.0, 9.0, 31.0], 2)], "{mode:?}");
        // min_visible 0 keeps every object, clipped to the image
        let (kept, dropped) = move_objects(objects, Some(&forward), mode, 0.0, SIZE, SIZE);
        assert_eq!((kept.len(), dropped), (3, 0));
        assert!(kept
            .iter()
            .all(|o| o.bbox.iter().all(|v| (0.0..=31.0).contains(v))));
    }
}

#[test]
fn the_min_visible_threshold_is_honoured() {
    // A 10x10 box (inclusive pixels) shifted so columns 25..=31 stay: 7 of 10.
    let bbox = [0.0, 0.0, 9.0, 9.0];
    let forward = shift_right(25.0);
    for mode in [BoxMode::Tight, BoxMode::Mask] {
        let moved = move_box(bbox, Some(&forward), mode, SIZE, SIZE);
        assert!((moved.visible - 0.7).abs() < 1e-6, "{mode:?}: {moved:?}");
        assert_eq!(moved.bbox, [0.0, 25.0, 9.0, 31.0], "{mode:?}");
        for (min_visible, kept) in [(0.25, true), (0.69, true), (0.71, false), (1.0, false)] {
            assert_eq!(moved.is_kept(min_visible), kept, "{mode:?} {min_visible}");
            let (objects, dropped) = move_objects(
                [object(bbox, 1)],
                Some(&forward),
                mode,
                min_visible,
                SIZE,
                SIZE,
            );
            assert_eq!((objects.len(), dropped), (kept as usize, !kept as usize));
        }
    }
    // A box wholly inside is fully visible, whatever the draw.
    let rotate = Affine::rotation(8.0, 16.0, 16.0);
    assert_eq!(
        move_box(
            [10.0, 10.0, 20.0, 20.0],
            Some(&rotate),
            BoxMode::Tight,
            SIZE,
            SIZE
        )
        .visible,
        1.0
    );
    let mask = move_box(
        [10.0, 10.0, 20.0, 20.0],
        Some(&rotate),
        BoxMode::Mask,
        SIZE,
        SIZE,
    );
    assert!(mask.visible > 0.9, "{mask:?}");
}

#[test]
fn an_image_without_objects_works() {
    let forward = AugmentDraw {
        rotate_deg: 5.0,
        flip: true,
        brightness: 0.0,
        contrast: 0.0,
        ..AugmentDraw::NONE
    }
    .geometry(SIZE, SIZE);
    for mode in [BoxMode::Tight, BoxMode::Mask] {
        assert_eq!(
            move_objects([], forward.as_ref(), mode, 0.25, SIZE, SIZE),
            (vec![], 0)
        );
    }
}

#[test]
fn min_visible_deserialises_with_its_default() {
    let params: AugmentParams = toml::from_str("min_visible = 0.5").unwrap();
    assert_eq!(
        params,
        AugmentParams {
            min_visible: 0.5,
            ..AugmentParams::default()
        }
    );
    let defaults: AugmentParams = toml::from_str("").unwrap();
    assert_eq!(defaults.min_visible, 0.25);
}

/// Items with 0, 1, 2, ... objects (cycling), object `k` of item `i` of class
/// `10 i + k`; object 0 is the item's `bbox`; the last object of every third
/// item sits in a corner, where big rotations take it out of the image.
fn items_with_objects(dir: &std::path::Path, count: u32) -> Vec<Item> {
    util::write_jpegs(dir, count)
        .into_iter()
        .enumerate()
        .map(|(i, (path, (h, w)))| {
            let (h, w) = (h as f32, w as f32);
            let bbox = [0.2 * h, 0.3 * w, 0.7 * h, 0.9 * w];
            let mut objects: Vec<Object> = (0..i % 4)
                .map(|k| {
                    let k_f = k as f32;
                    let moved = [0.1 * k_f * h, 0.1 * k_f * w, 0.1 * k_f * h, 0.1 * k_f * w];
                    object(
                        std::array::from_fn(|c| bbox[c] - moved[c]),
                        10 * i as i64 + k as i64,
                    )
                })
                .collect();
            if i % 3 == 0 {
                objects.push(object([0.0, 0.0, 0.1 * h, 0.1 * w], 10 * i as i64 + 9));
            }
            Item {
                path,
                class: Some(i as i64),
                bbox: Some(bbox),
                objects,
            }
        })
        .collect()
}

fn config(workers: usize, augment: Option<AugmentParams>) -> LoaderConfig {
    LoaderConfig {
        size: SIZE,
        batch_size: 4,
        workers,
        prefetch: 1,
        shuffle: true,
        seed: 9,
        augment,
        ..LoaderConfig::default()
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn the_loader_gives_each_image_its_moved_objects_in_batch_order() {
    let dir = tempfile::tempdir().unwrap();
    let items = Arc::new(items_with_objects(dir.path(), 23));
    let params = AugmentParams {
        rotate_deg: 180.0,
        rotate_p: 1.0,
        box_mode: BoxMode::Mask,
        ..AugmentParams::default()
    };
    let epoch = 1;
    let batches = collect(&Loader::new(items.clone(), config(3, Some(params))), epoch);
    let mut dropped_total = 0;
    for batch in &batches {
        assert_eq!(batch.objects.len(), batch.n);
        let mut dropped_in_batch = 0;
        for (i, &index) in batch.indices.iter().enumerate() {
            let item = &items[index];
            let orig_size = batch.orig_sizes[i];
            let forward = AugmentDraw::for_item(&params, 9, epoch, index).geometry(SIZE, SIZE);
            let (want, dropped) = move_objects(
                item.objects.iter().map(|o| Object {
                    bbox: squash_box(o.bbox, orig_size, SIZE),
                    ..*o
                }),
                forward.as_ref(),
                params.box_mode,
                params.min_visible,
                SIZE,
                SIZE,
            );
            assert_eq!(batch.objects[i], want, "item {index}");
            // and the batch says how the image moved (what TTA maps boxes back through)
            assert_eq!(batch.moves[i], forward, "item {index}");
            dropped_in_batch += dropped;
            // classes say whose object it is: this image's, in their order
            let classes: Vec<i64> = batch.objects[i].iter().map(|o| o.class).collect();
            assert!(
                classes.iter().all(|c| c / 10 == index as i64),
                "{classes:?}"
            );
            assert!(classes.windows(2).all(|p| p[0] < p[1]), "{classes:?}");
            // object 0 is the item's box: when kept, it is the moved bbox exactly
            if let Some(first) = batch.objects[i].first().filter(|o| o.class % 10 == 0) {
                assert_eq!(first.bbox, batch.boxes[i], "item {index}");
            }
        }
        assert_eq!(batch.dropped_objects, dropped_in_batch);
        dropped_total += batch.dropped_objects;
    }
    assert!(
        dropped_total > 0,
        "rotations up to 180 degrees take some corner objects out"
    );
    // the same batches whatever the number of threads
    assert_eq!(
        batches,
        collect(&Loader::new(items, config(1, Some(params))), epoch)
    );
}

#[test]
fn without_augmentation_every_object_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    let mut items = items_with_objects(dir.path(), 9);
    // a box mostly outside the image is clipped, not dropped
    let (h, w) = (
        items[2].bbox.unwrap()[2] / 0.7,
        items[2].bbox.unwrap()[3] / 0.9,
    );
    items[2]
        .objects
        .push(object([0.5 * h, 0.9 * w, 0.6 * h, 5.0 * w], 29));
    let items = Arc::new(items);
    let batches = collect(&Loader::new(items.clone(), config(2, None)), 0);
    for batch in &batches {
        assert_eq!(batch.dropped_objects, 0);
        assert_eq!(batch.moves, vec![None; batch.n], "validation moves nothing");
        for (i, &index) in batch.indices.iter().enumerate() {
            assert_eq!(batch.objects[i].len(), items[index].objects.len());
            assert!(batch.objects[i]
                .iter()
                .flat_map(|o| o.bbox)
                .all(|v| (0.0..=(SIZE - 1) as f32).contains(&v)));
        }
    }
    // items without objects: one empty list per image
    let bare: Vec<Item> = items
        .iter()
        .map(|item| Item {
            objects: Vec::new(),
            ..item.clone()
        })
        .collect();
    for batch in collect(
        &Loader::new(Arc::new(bare), config(2, Some(AugmentParams::default()))),
        0,
    ) {
        assert_eq!(batch.objects, vec![Vec::<Object>::new(); batch.n]);
        assert_eq!(batch.dropped_objects, 0);
    }
}
