//! The threaded loader: order, determinism, bad images, early drop.

mod util;

use std::path::PathBuf;
use std::sync::Arc;

use augment::{
    augment_one, decode_squashed, squash_box, AugmentParams, BadImage, Batch, Item, LoadError,
    Loader, LoaderConfig,
};

const SIZE: u32 = 32;

fn items_in(dir: &std::path::Path, count: u32) -> Vec<Item> {
    util::write_jpegs(dir, count)
        .into_iter()
        .enumerate()
        .map(|(i, (path, (h, w)))| Item {
            path,
            class: Some(i as i64 % 3),
            bbox: Some([
                0.2 * h as f32,
                0.2 * w as f32,
                0.8 * h as f32,
                0.8 * w as f32,
            ]),
            ..Default::default()
        })
        .collect()
}

fn config(workers: usize) -> LoaderConfig {
    LoaderConfig {
        size: SIZE,
        batch_size: 4,
        workers,
        prefetch: 1,
        shuffle: true,
        seed: 42,
        augment: Some(AugmentParams::default()),
        drop_last: false,
        on_bad_image: BadImage::Fail,
        ..LoaderConfig::default()
    }
}

fn collect(loader: &Loader, epoch: u64) -> Vec<Batch> {
    loader.epoch(epoch).collect::<Result<Vec<_>, _>>().unwrap()
}

#[test]
fn one_seed_gives_identical_batches_with_one_and_four_threads() {
    let dir = tempfile::tempdir().unwrap();
    let items = Arc::new(items_in(dir.path(), 18));
    let single = collect(&Loader::new(items.clone(), config(1)), 3);
    let four = collect(&Loader::new(items.clone(), config(4)), 3);
    assert_eq!(single, four);
    // recycled buffers (with stale contents) give the same batches
    let recycling = Loader::new(items.clone(), config(2));
    let recycled: Vec<Batch> = recycling
        .epoch(3)
        .map(|b| {
            let b = b.unwrap();
            recycling.recycle(b.clone());
            b
        })
        .collect();
    assert_eq!(single, recycled);
    let other_epoch = collect(&Loader::new(items, config(4)), 4);
    assert_ne!(
        single[0].indices, other_epoch[0].indices,
        "each epoch has its own shuffle"
    );
}

#[test]
fn an_epoch_covers_every_item_once_in_batches_of_the_right_shape() {
    let dir = tempfile::tempdir().unwrap();
    let items = Arc::new(items_in(dir.path(), 10));
    let loader = Loader::new(items.clone(), config(2));
    assert_eq!(loader.batches_per_epoch(), 3);
    let batches = collect(&loader, 0);
    assert_eq!(batches.iter().map(|b| b.n).collect::<Vec<_>>(), [4, 4, 2]);
    let mut seen: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
    assert_eq!(seen, loader.epoch_order(0), "batches come out in order");
    seen.sort();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
    let max = (SIZE - 1) as f32;
    for b in &batches {
        assert_eq!(
            (
                b.x.len(),
                b.classes.len(),
                b.boxes.len(),
                b.orig_sizes.len()
            ),
            (b.n * 3 * 32 * 32, b.n, b.n, b.n)
        );
        assert!(
            b.x.iter().all(|v| v.is_finite() && v.abs() < 3.0),
            "values are ImageNet-normalised 0..1 pixels"
        );
        assert!(b.boxes.iter().flatten().all(|v| (0.0..=max).contains(v)));
        for (i, &item) in b.indices.iter().enumerate() {
            assert_eq!(b.classes[i], items[item].class.unwrap());
        }
    }

    let drop_last = Loader::new(
        items,
        LoaderConfig {
            drop_last: true,
            ..config(2)
        },
    );
    assert_eq!(drop_last.batches_per_epoch(), 2);
    assert_eq!(collect(&drop_last, 0).iter().map(|b| b.n).sum::<usize>(), 8);
}

#[test]
fn without_augmentation_a_batch_is_the_squashed_normalised_image() {
    let dir = tempfile::tempdir().unwrap();
    let items = Arc::new(items_in(dir.path(), 5));
    let loader = Loader::new(
        items.clone(),
        LoaderConfig {
            augment: None,
            shuffle: false,
            ..config(2)
        },
    );
    let batches = collect(&loader, 0);
    let per_image = 3 * (SIZE * SIZE) as usize;
    for b in &batches {
        for (i, &item) in b.indices.iter().enumerate() {
            let squashed = decode_squashed(&items[item].path, SIZE).unwrap();
            let (x, _) = augment_one(
                &squashed.image,
                None,
                None,
                augment::BoxMode::Tight,
                &augment::Normalisation::IMAGENET,
            );
            assert_eq!(&b.x[i * per_image..][..per_image], &x[..]);
            assert_eq!(b.orig_sizes[i], squashed.orig_size);
            assert_eq!(
                b.boxes[i],
                squash_box(items[item].bbox.unwrap(), squashed.orig_size, SIZE)
            );
        }
    }
}

/// Items with a corrupt JPEG at position 5 and a missing file at position 9.
fn items_with_bad_files(dir: &std::path::Path) -> (Vec<Item>, PathBuf, PathBuf) {
    let mut items = items_in(dir, 14);
    let corrupt = dir.join("corrupt.jpg");
    let mut bytes = std::fs::read(&items[0].path).unwrap();
    bytes.truncate(40); // the SOI and part of a header, then nothing
    bytes.extend_from_slice(&[0x13; 200]);
    std::fs::write(&corrupt, bytes).unwrap();
    let missing = dir.join("missing.jpg");
    items[5].path = corrupt.clone();
    items[9].path = missing.clone();
    (items, corrupt, missing)
}

#[test]
fn a_corrupt_jpeg_ends_the_epoch_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (items, corrupt, _) = items_with_bad_files(dir.path());
    let outcomes = util::within(30, move || {
        let loader = Loader::new(
            Arc::new(items),
            LoaderConfig {
                shuffle: false,
                ..config(3)
            },
        );
        loader.epoch(0).collect::<Vec<_>>()
    });
    // batch 0 (items 0-3) is fine, batch 1 holds the corrupt item 5: the epoch stops there
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert!(outcomes[0].is_ok());
    let error = outcomes[1].as_ref().unwrap_err();
    assert!(matches!(error, LoadError::Decode { .. }), "{error}");
    assert_eq!(error.path(), Some(corrupt.as_path()));
    assert!(error.to_string().contains("corrupt.jpg"), "{error}");
}

#[test]
fn a_missing_file_ends_the_epoch_with_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut items, _, missing) = items_with_bad_files(dir.path());
    items[5] = items[4].clone();
    let outcomes = util::within(30, move || {
        let loader = Loader::new(
            Arc::new(items),
            LoaderConfig {
                shuffle: false,
                ..config(4)
            },
        );
        loader.epoch(0).collect::<Vec<_>>()
    });
    assert_eq!(outcomes.len(), 3, "{outcomes:?}");
    assert!(outcomes[0].is_ok() && outcomes[1].is_ok());
    let error = outcomes[2].as_ref().unwrap_err();
    assert!(matches!(error, LoadError::Io { .. }), "{error}");
    assert_eq!(error.path(), Some(missing.as_path()));
    assert!(error.to_string().contains("missing.jpg"), "{error}");
}

#[test]
fn skipped_images_are_left_out_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (items, corrupt, missing) = items_with_bad_files(dir.path());
    let (ns, skipped, indices) = util::within(30, move || {
        let loader = Loader::new(
            Arc::new(items),
            LoaderConfig {
                on_bad_image: BadImage::Skip,
                ..config(2)
            },
        );
        let mut epoch = loader.epoch(1);
        let batches: Vec<Batch> = epoch.by_ref().collect::<Result<_, _>>().unwrap();
        let skipped: Vec<PathBuf> = epoch
            .skipped()
            .iter()
            .map(|e| e.path().unwrap().to_path_buf())
            .collect();
        let indices: Vec<usize> = batches.iter().flat_map(|b| b.indices.clone()).collect();
        (batches.iter().map(|b| b.n).sum::<usize>(), skipped, indices)
    });
    assert_eq!(ns, 12);
    assert!(!indices.contains(&5) && !indices.contains(&9));
    let mut skipped = skipped;
    skipped.sort();
    assert_eq!(skipped, [corrupt, missing]);
}

#[test]
fn dropping_the_iterator_mid_epoch_stops_the_workers() {
    let dir = tempfile::tempdir().unwrap();
    let items = Arc::new(items_in(dir.path(), 6));
    // Many batches of the same few files, so workers are busy when the iterator goes.
    let many: Vec<Item> = (0..400).map(|i| items[i % items.len()].clone()).collect();
    util::within(30, move || {
        let loader = Loader::new(
            Arc::new(many),
            LoaderConfig {
                batch_size: 2,
                prefetch: 8,
                ..config(4)
            },
        );
        for _ in 0..3 {
            let mut epoch = loader.epoch(0);
            let first = epoch.next().unwrap().unwrap();
            assert_eq!(first.n, 2);
            drop(epoch); // joins the workers: returning at all shows nothing deadlocked
        }
        // an epoch that was never read from
        drop(loader.epoch(1));
    });
}

#[test]
fn the_real_voc_images_load() {
    let Some(voc) = util::voc_dir() else { return };
    let list = std::fs::read_to_string(voc.join("ImageSets/Main/train.txt")).unwrap();
    let mut items: Vec<Item> = list
        .lines()
        .take(24)
        .map(|id| Item {
            path: voc.join("JPEGImages").join(format!("{id}.jpg")),
            class: None,
            bbox: None,
            ..Default::default()
        })
        .collect();
    // 009623.jpg is a real missing file of this copy
    items.push(Item {
        path: voc.join("JPEGImages/009623.jpg"),
        class: None,
        bbox: None,
        ..Default::default()
    });
    let loader = Loader::new(
        Arc::new(items),
        LoaderConfig {
            size: 224,
            batch_size: 8,
            on_bad_image: BadImage::Skip,
            ..config(2)
        },
    );
    let mut epoch = loader.epoch(0);
    let batches: Vec<Batch> = epoch.by_ref().collect::<Result<_, _>>().unwrap();
    assert_eq!(batches.iter().map(|b| b.n).sum::<usize>(), 24);
    assert!(
        batches
            .iter()
            .all(|b| b.classes.is_empty() && b.boxes.is_empty()),
        "items carry neither"
    );
    assert_eq!(epoch.skipped().len(), 1);
    assert!(epoch.skipped()[0].to_string().contains("009623.jpg"));
    assert!(batches[0]
        .orig_sizes
        .iter()
        .all(|&(h, w)| h >= 100 && w >= 100));
}
