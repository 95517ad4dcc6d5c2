//! Every object of the real VOC 2007 train split, from both sources: the
//! lesson's `mbb.csv` / `mc.csv` rows, the per-box classes, the difficult
//! boxes, and the same five files from the JSON and from the XML.
//! Skips, saying why, where `../shared/voc2007` (or `$LESSON8_VOC2007`) is absent.

use std::path::Path;

use multibox::annotations::{multi_objects, read_boxes, read_mc, CsvPaths, MultiObjects};
use multibox::difficult::{difficult_from_coco_json, difficult_from_voc_xml};
use voc_annotations::{load_coco_json, load_voc_xml};

/// Writes the five files into `dir`, checks they read back, returns their text.
fn write_and_read(multi: &MultiObjects, dir: &Path) -> Vec<String> {
    std::fs::create_dir_all(dir).unwrap();
    let paths = CsvPaths::in_dir(dir);
    multi.write_csvs(&paths).unwrap();
    assert_eq!(
        read_boxes(&paths.mbb, &paths.mbb_classes).unwrap(),
        multi.objects
    );
    assert_eq!(
        read_boxes(&paths.difficult_boxes, &paths.difficult_classes).unwrap(),
        multi.difficult
    );
    assert_eq!(read_mc(&paths.mc).unwrap(), multi.mc_rows());
    [
        &paths.mbb,
        &paths.mc,
        &paths.mbb_classes,
        &paths.difficult_boxes,
        &paths.difficult_classes,
    ]
    .map(|p| std::fs::read_to_string(p).unwrap())
    .to_vec()
}

#[test]
fn every_object_of_voc2007_train_from_json_and_xml() {
    let Some(data) = shared_voc::voc2007() else {
        return;
    };
    let json_path = data.join(shared_voc::JSON);
    let dataset = load_coco_json(&json_path).unwrap();
    let difficult = difficult_from_coco_json(&json_path, &dataset).unwrap();
    let multi = multi_objects(&dataset, &difficult).unwrap();

    // 2501 images, all with a usable box; 6301 usable boxes and 1543 ignored
    // ones (on 699 images), 7844 annotations in all.
    assert_eq!(multi.objects.len(), 2501);
    assert_eq!(multi.images_without_box, 0);
    let boxes: usize = multi.objects.iter().map(|i| i.boxes.len()).sum();
    let difficult_boxes: usize = multi.difficult.iter().map(|i| i.boxes.len()).sum();
    assert_eq!((boxes, difficult_boxes), (6301, 1543));
    assert_eq!(multi.difficult.len(), 699);
    assert_eq!(multi.classes.len(), 20);

    let out = tempfile::tempdir().unwrap();
    let from_json = write_and_read(&multi, &out.path().join("json"));
    let lines = |text: &str| text.lines().map(str::to_owned).collect::<Vec<_>>();
    let (mbb, mc, classes, difficult_mbb, difficult_classes) = (
        lines(&from_json[0]),
        lines(&from_json[1]),
        lines(&from_json[2]),
        lines(&from_json[3]),
        lines(&from_json[4]),
    );
    assert_eq!(
        mbb[..4],
        [
            "fn,bbox",
            "000012.jpg,96 155 269 350",
            "000017.jpg,61 184 198 278 77 89 335 402",
            "000023.jpg,229 8 499 244 219 229 499 333 0 1 368 116 1 2 461 242 0 224 485 333",
        ]
    );
    assert_eq!(
        mc[..4],
        [
            "fn,clas",
            "000012.jpg,car",
            "000017.jpg,person horse",
            "000023.jpg,bicycle person"
        ]
    );
    assert_eq!(
        classes[3],
        "000023.jpg,bicycle bicycle person person person"
    );
    assert_eq!(
        difficult_mbb[..3],
        [
            "fn,bbox",
            "000023.jpg,177 1 499 89",
            "000035.jpg,194 467 316 499 303 2 374 499"
        ]
    );
    assert_eq!(difficult_classes[2], "000035.jpg,person diningtable");
    assert_eq!((mbb.len(), mc.len(), classes.len()), (2502, 2502, 2502));
    assert_eq!(difficult_mbb.len(), 1 + 699);
    // The image with the most boxes.
    let most = multi.objects.iter().max_by_key(|i| i.boxes.len()).unwrap();
    assert_eq!(
        (most.file_name.as_str(), most.boxes.len()),
        ("007953.jpg", 19)
    );

    // The devkit's XML gives the same five files byte for byte.
    let voc_dir = data.join(shared_voc::DEVKIT);
    let xml_dataset = load_voc_xml(&voc_dir, "train").unwrap();
    let xml_difficult = difficult_from_voc_xml(&voc_dir, "train", &xml_dataset).unwrap();
    let xml_multi = multi_objects(&xml_dataset, &xml_difficult).unwrap();
    let from_xml = write_and_read(&xml_multi, &out.path().join("xml"));
    for (name, (j, x)) in [
        "mbb",
        "mc",
        "mbb_classes",
        "mbb_difficult",
        "mbb_difficult_classes",
    ]
    .iter()
    .zip(from_json.iter().zip(&from_xml))
    {
        assert!(j == x, "{name}.csv differs between the JSON and the XML");
    }
}
