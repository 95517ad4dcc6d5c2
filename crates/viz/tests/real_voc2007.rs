//! viz on the real VOC 2007 train split: the lesson's `draw_idx(17)` and the
//! largest-object boxes of bb.csv. Skips, saying why, where the data is absent.

use viz::draw::{BLACK, WHITE};
use viz::grid::GridLayout;
use viz::inspect::{draw_artifact, draw_dataset_image, summarize};

#[test]
fn image_17_shows_person_and_horse_with_their_boxes() {
    let Some(data) = shared_voc::voc2007() else {
        return;
    };
    let images = data.join("VOCdevkit/VOC2007/JPEGImages");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("17.png");
    let names = draw_dataset_image(&data.join("pascal_train2007.json"), &images, 17, &out).unwrap();
    assert_eq!(names, vec!["person", "horse"]);
    let drawn = image::open(&out).unwrap().into_rgb8();
    let original = image::open(images.join("000017.jpg")).unwrap();
    assert_eq!(drawn.dimensions(), (original.width(), original.height()));
    // The JSON's person is [x 184, y 61, w 95, h 138]: box [61, 184, 198, 278].
    // Down its right edge (column 278, away from the label): 2 px white on and just
    // outside the edge (278, 279), 1 px of black outline on each side (277, 280).
    for y in [120, 150, 180] {
        assert_eq!(*drawn.get_pixel(278, y), WHITE, "right edge at row {y}");
        assert_eq!(*drawn.get_pixel(279, y), WHITE, "right edge at row {y}");
        assert_eq!(*drawn.get_pixel(277, y), BLACK, "inner outline at row {y}");
        assert_eq!(*drawn.get_pixel(280, y), BLACK, "outer outline at row {y}");
        assert_ne!(
            *drawn.get_pixel(276, y),
            BLACK,
            "the image shows inside the outline at row {y}"
        );
    }
}

#[test]
fn bb_csv_draws_the_largest_boxes_of_the_first_12_images() {
    let Some(data) = shared_voc::voc2007() else {
        return;
    };
    let dataset = voc_annotations::load_coco_json(&data.join("pascal_train2007.json")).unwrap();
    let largest = largest_object::largest_objects(&dataset).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (lrg, bb) = (dir.path().join("lrg.csv"), dir.path().join("bb.csv"));
    largest.write_csvs(&lrg, &bb).unwrap();

    let summary = summarize(&bb).unwrap();
    assert!(
        summary.contains(&format!("rows: {}", largest.rows.len())),
        "{summary}"
    );
    assert!(
        summary.contains("000017.jpg  77 89 335 402"),
        "the horse is 17's largest box:\n{summary}"
    );
    let summary = summarize(&lrg).unwrap();
    assert!(summary.contains("classes: 20"), "{summary}");

    let out = dir.path().join("bb12.png");
    let drawn = draw_artifact(&bb, 12, &data.join("VOCdevkit/VOC2007/JPEGImages"), &out).unwrap();
    assert_eq!(drawn.path, out);
    let grid = image::open(&out).unwrap().into_rgb8();
    assert_eq!(grid.dimensions(), GridLayout::default().size_px());
    assert!(
        grid.pixels().filter(|p| **p == WHITE).count() > 12 * 200,
        "twelve white boxes and captions"
    );
}
