use std::collections::BTreeMap;
use std::path::Path;

use synthetic_voc::{generate, SynthConfig, SHAPE_CLASSES};
use voc_annotations::{load_coco_json, load_voc_xml};

/// Every file under `dir`, relative path to bytes.
fn tree(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let rel = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                files.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        images: 24,
        seed,
        ..SynthConfig::default()
    }
}

#[test]
fn same_seed_gives_identical_bytes_and_another_seed_differs() {
    let (a, b, c) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    generate(a.path(), &small(7)).unwrap();
    generate(b.path(), &small(7)).unwrap();
    generate(c.path(), &small(8)).unwrap();
    let (ta, tb, tc) = (tree(a.path()), tree(b.path()), tree(c.path()));
    assert_eq!(
        ta.len(),
        1 + 24 * 2 + 1,
        "json, 24 jpg + 24 xml, train.txt: {:?}",
        ta.keys().collect::<Vec<_>>()
    );
    assert!(ta == tb, "same seed, different bytes");
    assert_ne!(ta["pascal_train2007.json"], tc["pascal_train2007.json"]);
    assert_ne!(
        ta["VOCdevkit/VOC2007/JPEGImages/000001.jpg"],
        tc["VOCdevkit/VOC2007/JPEGImages/000001.jpg"]
    );
}

#[test]
fn regenerating_replaces_the_old_dataset_and_leaves_no_staging() {
    let dir = tempfile::tempdir().unwrap();
    generate(
        dir.path(),
        &SynthConfig {
            images: 30,
            ..small(1)
        },
    )
    .unwrap();
    let generated = generate(dir.path(), &small(2)).unwrap();
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(names, ["VOCdevkit", "pascal_train2007.json"]);
    assert_eq!(
        std::fs::read_dir(&generated.images_dir).unwrap().count(),
        24
    );
    assert_eq!(
        load_voc_xml(&generated.voc_dir, "train")
            .unwrap()
            .images
            .len(),
        24
    );
}

#[test]
fn default_dataset_loads_the_same_from_json_and_xml_and_is_learnable() {
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let generated = generate(dir.path(), &SynthConfig::default()).unwrap();
    eprintln!("generated 300 images in {:.2?}", started.elapsed());
    let from_json = load_coco_json(&generated.json).unwrap();
    let from_xml = load_voc_xml(&generated.voc_dir, "train").unwrap();
    assert_eq!(from_json, from_xml);
    assert_eq!(from_json.images.len(), 300);
    assert_eq!(from_json.object_count(), generated.objects);
    assert_eq!(from_json.stats.ignored, generated.ignored);
    assert_eq!(from_json.stats.clamped, 0);
    assert!(
        generated.ignored > 10 && generated.ignored < 90,
        "{} ignored",
        generated.ignored
    );
    assert!(
        generated.objects > 400,
        "{} objects: too few images with several",
        generated.objects
    );

    let largest = largest_object::largest_objects(&from_json).unwrap();
    assert_eq!(largest.images_without_box, 0);
    let mut largest_per_class = BTreeMap::new();
    for (image, row) in from_json.images.iter().zip(&largest.rows) {
        assert!((160..=320).contains(&image.width) && (160..=320).contains(&image.height));
        // The largest box is clearly the largest.
        let mut areas: Vec<f64> = image
            .objects
            .iter()
            .map(|o| largest_object::area(&o.bbox))
            .collect();
        areas.sort_by(|a, b| b.total_cmp(a));
        if areas.len() > 1 {
            assert!(
                areas[0] >= 1.8 * areas[1],
                "{}: areas {areas:?}",
                image.file_name
            );
        }
        *largest_per_class.entry(row.category.clone()).or_insert(0) += 1;
    }
    // All four default classes are the largest object often enough to learn.
    assert_eq!(largest_per_class.len(), 4, "{largest_per_class:?}");
    assert!(
        largest_per_class.values().all(|&n| n >= 45),
        "{largest_per_class:?}"
    );

    // Boxes are exact: the class colour fills the box and stops at its edge.
    let mut sharp = 0;
    for (image, row) in from_json.images.iter().zip(&largest.rows) {
        let class = SHAPE_CLASSES
            .iter()
            .find(|c| c.name == row.category)
            .unwrap();
        let pixels = image::open(generated.images_dir.join(&image.file_name))
            .unwrap()
            .to_rgb8();
        assert_eq!(pixels.dimensions(), (image.width, image.height));
        let is_class = |x: i64, y: i64| {
            let p = pixels.get_pixel(x as u32, y as u32).0;
            p.iter()
                .zip(class.colour)
                .map(|(&a, b)| (a as i32 - b as i32).abs())
                .max()
                .unwrap()
                < 55
        };
        let [top, left, bottom, right] = row.bbox.map(|v| v as i64);
        let inside = (top..=bottom)
            .flat_map(|y| (left..=right).map(move |x| (x, y)))
            .filter(|&(x, y)| is_class(x, y))
            .count();
        let box_area = ((bottom - top + 1) * (right - left + 1)) as f64;
        // Two pixels out from the box, all round (where the image goes on).
        let ring: Vec<(i64, i64)> = (top - 2..=bottom + 2)
            .flat_map(|y| [(left - 2, y), (right + 2, y)])
            .chain((left - 2..=right + 2).flat_map(|x| [(x, top - 2), (x, bottom + 2)]))
            .filter(|&(x, y)| x >= 0 && y >= 0 && x < image.width as i64 && y < image.height as i64)
            .collect();
        let ring_hits = ring.iter().filter(|&&(x, y)| is_class(x, y)).count();
        assert!(
            inside as f64 >= 0.35 * box_area,
            "{}: only {inside} of {box_area} box pixels look {}",
            image.file_name,
            class.name
        );
        if ring.is_empty() || (ring_hits as f64) < 0.02 * ring.len() as f64 {
            sharp += 1;
        } else {
            eprintln!(
                "{} {}: {ring_hits}/{} ring hits, box {:?}",
                image.file_name,
                class.name,
                ring.len(),
                row.bbox
            );
        }
    }
    assert!(
        sharp >= 295,
        "only {sharp} of 300 largest boxes end where their object ends"
    );
}
