//! One test per fuzz target: each fuzzes its target for `LESSON8_FUZZ_SECS`
//! seconds (default 5) in a child process and fails on a panic, a hang, an
//! allocation over the limit or a violated contract (see `crates/fuzz/README.md`).

use std::path::{Path, PathBuf};

use fuzz::{fuzz_test, Layout, LimitedAlloc, TARGETS};

/// Refuses single allocations over `LESSON8_FUZZ_MAX_ALLOC_MB` (512) and more than
/// `LESSON8_FUZZ_MAX_LIVE_MB` (1536) live, in the fuzzing children only.
#[global_allocator]
static ALLOC: LimitedAlloc = LimitedAlloc;

fn layout() -> Layout {
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let target_dir = tmp.parent().map_or_else(|| tmp.clone(), Path::to_path_buf);
    Layout {
        corpus: Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        failures: target_dir.join("fuzz-failures"),
        tmp,
    }
}

fn run(name: &str) {
    fuzz_test(name, &layout());
}

#[test]
fn coco_json() {
    run("coco_json")
}

#[test]
fn voc_xml() {
    run("voc_xml")
}

#[test]
fn csv() {
    run("csv")
}

#[test]
fn model_meta() {
    run("model_meta")
}

#[test]
fn jpeg() {
    run("jpeg")
}

#[test]
fn pipeline_toml() {
    run("pipeline_toml")
}

/// Every target in the registry has a test above (the child runs it by name) and a seed corpus.
#[test]
fn every_target_has_its_test_and_a_corpus() {
    if std::env::var_os("LESSON8_FUZZ_CHILD").is_some() {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let listed = std::process::Command::new(exe)
        .args(["--list", "--format", "terse"])
        .env("LESSON8_FUZZ_CHILD", "-")
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    for target in TARGETS {
        assert!(
            listed
                .lines()
                .any(|l| l == format!("{}: test", target.name)),
            "fuzz target {} has no #[test] fn {}() in tests/fuzz.rs",
            target.name,
            target.name
        );
        let corpus = layout().corpus.join(target.name);
        let files = std::fs::read_dir(&corpus).map(|d| d.count()).unwrap_or(0);
        assert!(
            files > 0,
            "fuzz target {} has no corpus in {}",
            target.name,
            corpus.display()
        );
    }
}

/// Writes the seed corpus (`crates/fuzz/corpus/<target>/seed-*`). Run after a format
/// change: `cargo test -p fuzz --test fuzz write_seed_corpus -- --ignored`.
#[test]
#[ignore]
fn write_seed_corpus() {
    seeds::write_all(&layout().corpus);
}

mod seeds {
    use std::path::Path;

    fn put(dir: &Path, target: &str, name: &str, bytes: &[u8]) {
        let path = dir.join(target).join(format!("seed-{name}"));
        fuzz::write_seed(&path, bytes).unwrap();
        assert!(
            bytes.len() <= 8 << 10,
            "{}: {} bytes, keep seeds small",
            path.display(),
            bytes.len()
        );
    }

    pub fn write_all(dir: &Path) {
        coco(dir);
        voc(dir);
        csv(dir);
        model(dir);
        jpeg(dir);
    }

    fn coco(dir: &Path) {
        put(
            dir,
            "coco_json",
            "two_images.json",
            br#"{"images": [{"file_name": "000012.jpg", "height": 333, "width": 500, "id": 12},
 {"file_name": "000017.jpg", "height": 364, "width": 480, "id": 17}],
 "type": "instances",
 "annotations": [{"segmentation": [[155, 96, 155, 270, 351, 270, 351, 96]], "area": 34104, "iscrowd": 0, "image_id": 12, "bbox": [155, 96, 196, 174], "category_id": 7, "id": 1, "ignore": 0},
 {"segmentation": [[184, 61, 184, 199, 279, 199, 279, 61]], "area": 13110, "iscrowd": 0, "image_id": 17, "bbox": [184, 61, 95, 138], "category_id": 15, "id": 2, "ignore": 0},
 {"segmentation": [[89, 77, 89, 336, 403, 336, 403, 77]], "area": 81326, "iscrowd": 0, "image_id": 17, "bbox": [89, 77, 314, 259], "category_id": 13, "id": 3, "ignore": 0}],
 "categories": [{"supercategory": "none", "id": 7, "name": "car"}, {"supercategory": "none", "id": 13, "name": "horse"}, {"supercategory": "none", "id": 15, "name": "person"}]}
"#,
        );
        put(
            dir,
            "coco_json",
            "ignore_clamp_sparse_ids.json",
            br#"{"images":[{"file_name":"a/b.jpg","height":10,"width":20,"id":900000000000}],
"annotations":[{"image_id":900000000000,"bbox":[-2,0,5,5],"category_id":1,"ignore":true},
{"image_id":900000000000,"bbox":[15,8,10,10],"category_id":1},
{"image_id":900000000000,"bbox":[1.5,2.25,3.5,4],"category_id":2,"ignore":1,"id":7}],
"categories":[{"id":1,"name":"dog"},{"id":2,"name":"cat"}]}"#,
        );
        let classes = voc_annotations::VOC_CLASSES
            .iter()
            .zip(1..)
            .map(|(c, i)| format!(r#"{{"id":{i},"name":"{c}"}}"#))
            .collect::<Vec<_>>()
            .join(",");
        put(
            dir,
            "coco_json",
            "all_classes.json",
            format!(
                r#"{{"images":[{{"file_name":"x.jpg","height":375,"width":500,"id":1}}],"annotations":[{{"image_id":1,"bbox":[0,0,500,375],"category_id":20}}],"categories":[{classes}]}}"#
            )
            .as_bytes(),
        );
    }

    fn voc_annotation(file: &str, objects: &[(&str, bool, [u32; 4])]) -> String {
        let mut xml = format!(
            "<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{file}</filename>\n\t<size>\n\t\t<width>500</width>\n\t\t<height>333</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"
        );
        for (name, difficult, [xmin, ymin, xmax, ymax]) in objects {
            xml += &format!(
                "\t<object>\n\t\t<name>{name}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>{}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{xmin}</xmin>\n\t\t\t<ymin>{ymin}</ymin>\n\t\t\t<xmax>{xmax}</xmax>\n\t\t\t<ymax>{ymax}</ymax>\n\t\t</bndbox>\n\t</object>\n",
                u8::from(*difficult)
            );
        }
        xml + "</annotation>\n"
    }

    fn voc(dir: &Path) {
        put(
            dir,
            "voc_xml",
            "one.xml",
            voc_annotation("000012.jpg", &[("car", false, [156, 97, 351, 270])]).as_bytes(),
        );
        let layout = format!(
            "000012\n2008_000017 1\n=====\n{}\n=====\n{}",
            voc_annotation(
                "000012.jpg",
                &[
                    ("car", false, [156, 97, 351, 270]),
                    ("dog", true, [1, 1, 500, 333])
                ]
            ),
            voc_annotation(
                "2008_000017.jpg",
                &[
                    ("person", false, [185, 62, 279, 199]),
                    ("horse", false, [90, 78, 403, 336])
                ]
            ),
        );
        put(dir, "voc_xml", "layout_two_images.txt", layout.as_bytes());
        put(
            dir,
            "voc_xml",
            "cdata_entities.xml",
            b"<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<!-- a comment -->\n<annotation verified=\"no\">\n<filename><![CDATA[a&b.jpg]]></filename>\n<size><width>20</width><height>10</height></size>\n<object><name>d&#111;g</name><difficult/><bndbox><xmin>-3</xmin><ymin>1.5</ymin><xmax>25</xmax><ymax>&#x39;</ymax></bndbox></object>\n<object><name>cat</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox><part><name>head</name></part></object>\n</annotation>\n",
        );
    }

    fn csv(dir: &Path) {
        let files: &[(&str, &[u8])] = &[
            ("lrg.csv", b"fn,cat\n000012.jpg,car\n000017.jpg,horse\n000023.jpg,bicycle\n"),
            ("bb.csv", b"fn,bbox\n000012.jpg,96 155 269 350\n000017.jpg,77 89 335 402\n000023.jpg,1 2 461 242.5\n"),
            ("quoted_crlf.csv", b"fn,cat\r\n\"a,b.jpg\",\"say \"\"hi\"\"\"\r\nsub/c.jpg,dog\r\n"),
            (
                "bbox_predictions.csv",
                b"fn,bbox,true_bbox,iou\n000002.jpg,43.9 41.9 148.7 120.1,34 65 112 146,0.3487\n000003.jpg,35.8 70.6 135.1 231,37 74 146 212,\n",
            ),
            ("class_predictions.csv", b"fn,cat,true_cat,prob\n000002.jpg,dog,cat,0.61\n000003.jpg,car,car,0.99\n"),
            (
                "lr_find.csv",
                b"iteration,lr,loss,smooth_loss\n0,0.00001,114.14216613769531,114.14216613769531\n1,0.00031622776601683794,113.68482208251953,113.91118429164682\n",
            ),
            ("lr_find.json", b"{\n  \"min_loss_lr\": 0.31622776601683794,\n  \"suggested_lr\": 0.03162277660168379\n}"),
            (
                "metrics.csv",
                b"epoch,trn_loss,val_loss,l1_px,mean_iou,iou50,seconds\n0,102.75233588194574,87.68911743164063,87.68912525574366,0.000025629616478302825,0,11.731\n1,88.42701857324866,,54.98991107940674,0.03653818518699457,0,11.987\n",
            ),
            (
                "predictions.jsonl",
                b"{\"file\":\"a/b.jpg\",\"width\":500,\"height\":375,\"classes\":[{\"class\":\"dog\",\"prob\":0.75}],\"bbox\":[1.5,2.0,300.0,400.0]}\n{\"file\":\"bad.jpg\",\"error\":\"cannot decode\"}\n",
            ),
        ];
        for (name, bytes) in files {
            put(dir, "csv", name, bytes);
        }
    }

    fn safetensors_file(metadata: Option<&str>) -> Vec<u8> {
        use safetensors::tensor::{Dtype, TensorView};
        let w: Vec<u8> = [1.5f32, -2.0, 3.25, 0.0, 7.0, 8.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let b: Vec<u8> = [4i64, 5].iter().flat_map(|v| v.to_le_bytes()).collect();
        let h: Vec<u8> = [1u16, 2].iter().flat_map(|v| v.to_le_bytes()).collect();
        let tensors = vec![
            (
                "head.weight",
                TensorView::new(Dtype::F32, vec![2, 3], &w).unwrap(),
            ),
            (
                "head.steps",
                TensorView::new(Dtype::I64, vec![2], &b).unwrap(),
            ),
            (
                "bn.half",
                TensorView::new(Dtype::F16, vec![2, 1], &h).unwrap(),
            ),
            ("flag", TensorView::new(Dtype::BOOL, vec![], &[1]).unwrap()),
            (
                "empty",
                TensorView::new(Dtype::F32, vec![0, 4], &[]).unwrap(),
            ),
        ];
        let info = metadata
            .map(|m| std::collections::HashMap::from([("trainer".to_string(), m.to_string())]));
        safetensors::serialize(tensors, info).unwrap()
    }

    fn model(dir: &Path) {
        let meta = r#"{"format":1,"normalisation":{"mean":[0.49803922,0.49803922,0.49803922],"std":[0.5019608,0.5019608,0.5019608]},"arch":"efficientnet-lite0","head":"flatten_linear","task":{"task":"bbox"},"size":224,"val_fraction":0.2,"seed":42,"metrics":[{"epoch":0,"trn_loss":102.75233588194574,"val_loss":87.68911743164062,"metrics":[87.68912525574366,0.000025629616478302825,0.0],"seconds":11.730534053}],"resume":null}"#;
        put(
            dir,
            "model_meta",
            "model.safetensors",
            &safetensors_file(Some(meta)),
        );
        let checkpoint = r#"{"arch":"tiny","head":"classifier","task":{"task":"classify","classes":["cat","dog"]},"size":32,"val_fraction":0.2,"seed":1,"metrics":[],"resume":{"run_key":"abc","step":1,"epochs_done":2,"fit":{"epoch":0}}}"#;
        put(
            dir,
            "model_meta",
            "checkpoint.safetensors",
            &safetensors_file(Some(checkpoint)),
        );
        put(
            dir,
            "model_meta",
            "backbone.safetensors",
            &safetensors_file(None),
        );
    }

    fn gradient(w: u32, h: u32) -> image::RgbImage {
        image::RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([
                (x * 255 / w.max(1)) as u8,
                (y * 255 / h.max(1)) as u8,
                ((x + y) * 7) as u8,
            ])
        })
    }

    fn encode(
        pixels: &[u8],
        w: u16,
        h: u16,
        color: jpeg_encoder::ColorType,
        quality: u8,
        setup: impl FnOnce(&mut jpeg_encoder::Encoder<&mut Vec<u8>>),
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut encoder = jpeg_encoder::Encoder::new(&mut out, quality);
        setup(&mut encoder);
        encoder.encode(pixels, w, h, color).unwrap();
        out
    }

    fn jpeg(dir: &Path) {
        use jpeg_encoder::ColorType;
        let small = gradient(16, 12);
        let mut baseline = Vec::new();
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut baseline, 75)
            .encode_image(&small)
            .unwrap();
        put(dir, "jpeg", "baseline_16x12.jpg", &baseline);
        let gray: Vec<u8> = (0..64u32).map(|i| (i * 4) as u8).collect();
        put(
            dir,
            "jpeg",
            "gray_8x8.jpg",
            &encode(&gray, 8, 8, ColorType::Luma, 80, |_| {}),
        );
        let p = gradient(24, 16);
        put(
            dir,
            "jpeg",
            "progressive_24x16.jpg",
            &encode(p.as_raw(), 24, 16, ColorType::Rgb, 70, |e| {
                e.set_progressive(true)
            }),
        );
        let cmyk: Vec<u8> = (0..16 * 16)
            .flat_map(|i| [i as u8, 255 - i as u8, 40, 200])
            .collect();
        put(
            dir,
            "jpeg",
            "cmyk_16x16.jpg",
            &encode(&cmyk, 16, 16, ColorType::Cmyk, 70, |_| {}),
        );
        let mut exif = b"Exif\0\0II\x2a\0\x08\0\0\0".to_vec();
        exif.extend_from_slice(&1u16.to_le_bytes());
        exif.extend_from_slice(&0x0112u16.to_le_bytes());
        exif.extend_from_slice(&3u16.to_le_bytes());
        exif.extend_from_slice(&1u32.to_le_bytes());
        exif.extend_from_slice(&6u32.to_le_bytes());
        exif.extend_from_slice(&0u32.to_le_bytes());
        let rotated = gradient(12, 20);
        put(
            dir,
            "jpeg",
            "exif_rotate90_12x20.jpg",
            &encode(rotated.as_raw(), 12, 20, ColorType::Rgb, 70, |e| {
                e.add_app_segment(1, &exif).unwrap();
                e.set_restart_interval(1);
            }),
        );
        // Large enough that the loader decodes it at 1/2 by the reduced inverse DCT
        // (covering 224 needs both sides >= 448), flat so that it stays small.
        let flat = image::RgbImage::from_pixel(464, 456, image::Rgb([90, 140, 200]));
        put(
            dir,
            "jpeg",
            "reduced_464x456.jpg",
            &encode(flat.as_raw(), 464, 456, ColorType::Rgb, 30, |e| {
                e.set_sampling_factor(jpeg_encoder::SamplingFactor::F_2_2)
            }),
        );
        let mut png = Vec::new();
        image::DynamicImage::ImageRgba8(image::RgbaImage::from_pixel(
            4,
            3,
            image::Rgba([1, 2, 3, 128]),
        ))
        .write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
        put(dir, "jpeg", "alpha_4x3.png", &png);
    }
}
