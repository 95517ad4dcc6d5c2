//! The lesson's CSVs from the real VOC 2007 train split, from both sources.

use std::path::Path;

use largest_object::largest_objects;
use voc_annotations::{load_coco_json, load_voc_xml, Dataset};

/// Writes both CSVs for `dataset` into `dir` and returns their text.
fn csvs(dataset: &Dataset, dir: &Path) -> (String, String) {
    let largest = largest_objects(dataset).unwrap();
    assert_eq!(largest.images_without_box, 0);
    let (lrg, bb) = (dir.join("lrg.csv"), dir.join("bb.csv"));
    largest.write_csvs(&lrg, &bb).unwrap();
    assert_eq!(csv_export::read_lrg(&lrg).unwrap(), largest.lrg_rows());
    assert_eq!(csv_export::read_bb(&bb).unwrap(), largest.bb_rows());
    (
        std::fs::read_to_string(lrg).unwrap(),
        std::fs::read_to_string(bb).unwrap(),
    )
}

#[test]
fn lesson_csvs_from_json_and_xml() {
    let Some(data) = shared_voc::voc2007() else {
        return;
    };
    let out = tempfile::tempdir().unwrap();
    let (json_dir, xml_dir) = (out.path().join("json"), out.path().join("xml"));
    std::fs::create_dir_all(&json_dir).unwrap();
    std::fs::create_dir_all(&xml_dir).unwrap();
    let (lrg, bb) = csvs(
        &load_coco_json(&data.join("pascal_train2007.json")).unwrap(),
        &json_dir,
    );
    let (lrg_xml, bb_xml) = csvs(
        &load_voc_xml(&data.join("VOCdevkit/VOC2007"), "train").unwrap(),
        &xml_dir,
    );

    let bb_lines: Vec<&str> = bb.lines().collect();
    assert_eq!(
        bb_lines[..5],
        [
            "fn,bbox",
            "000012.jpg,96 155 269 350",
            "000017.jpg,77 89 335 402",
            "000023.jpg,1 2 461 242",
            "000026.jpg,124 89 211 336"
        ]
    );
    let lrg_lines: Vec<&str> = lrg.lines().collect();
    assert_eq!(
        lrg_lines[..3],
        ["fn,cat", "000012.jpg,car", "000017.jpg,horse"]
    );
    // Every one of the 2501 train images has at least one box that is not `ignore`.
    assert_eq!(bb_lines.len(), 1 + 2501);
    assert_eq!(lrg_lines.len(), 1 + 2501);
    assert_eq!(lrg, lrg_xml);
    assert_eq!(bb, bb_xml);
}
