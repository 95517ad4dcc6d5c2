//! A small, deterministic, learnable stand-in for Pascal VOC 2007, in the
//! lesson's layout:
//!
//! ```text
//! dir/pascal_train2007.json                      COCO style, as the lesson's
//! dir/VOCdevkit/VOC2007/JPEGImages/000001.jpg    real JPEGs
//! dir/VOCdevkit/VOC2007/Annotations/000001.xml   VOC XML
//! dir/VOCdevkit/VOC2007/ImageSets/Main/train.txt
//! ```
//!
//! Each image (160-320 px a side by default) has a textured, noisy background
//! and 1-3 filled objects of a few classes, each class a distinct shape and
//! colour ([`SHAPE_CLASSES`]: red disc, green rectangle, blue triangle, yellow
//! cross, ...), named after VOC classes so the usual 20 categories (ids 1..20)
//! apply. The first object is the largest by a clear margin (every other box
//! has at most [`MAX_OTHER_AREA_RATIO`] of its area) and objects never touch,
//! so a CNN can learn both the largest object's class and its box. Boxes are
//! the exact extent of each drawn shape. Some images get an extra small
//! object flagged `ignore` / `difficult`.
//!
//! The same [`SynthConfig`] (seed included) gives identical bytes on every
//! run: each image draws from its own ChaCha stream, so the images are made
//! in parallel without changing the result.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use image::{Rgb, RgbImage};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use voc_annotations::VOC_CLASSES;

/// How a class is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    Disc,
    Rectangle,
    Triangle,
    Cross,
    Ring,
    Diamond,
}

/// One synthetic class: a VOC class name, its shape and its colour.
#[derive(Debug, Clone, Copy)]
pub struct ShapeClass {
    pub name: &'static str,
    pub shape: Shape,
    pub colour: [u8; 3],
}

/// The classes, in the order [`SynthConfig::classes`] takes them.
pub const SHAPE_CLASSES: [ShapeClass; 6] = [
    ShapeClass {
        name: "car",
        shape: Shape::Disc,
        colour: [220, 40, 40],
    },
    ShapeClass {
        name: "dog",
        shape: Shape::Rectangle,
        colour: [40, 190, 60],
    },
    ShapeClass {
        name: "bird",
        shape: Shape::Triangle,
        colour: [40, 80, 230],
    },
    ShapeClass {
        name: "person",
        shape: Shape::Cross,
        colour: [235, 215, 40],
    },
    ShapeClass {
        name: "cat",
        shape: Shape::Ring,
        colour: [210, 50, 200],
    },
    ShapeClass {
        name: "horse",
        shape: Shape::Diamond,
        colour: [40, 210, 210],
    },
];

/// Every box but the largest has at most this fraction of the largest box's area.
pub const MAX_OTHER_AREA_RATIO: f64 = 0.45;

/// What to generate.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthConfig {
    pub images: usize,
    pub seed: u64,
    /// How many of [`SHAPE_CLASSES`] to use (1..=6).
    pub classes: usize,
    /// Image sides are drawn uniformly from `min_side..=max_side`.
    pub min_side: u32,
    pub max_side: u32,
    /// Usable objects per image: 1..=max_objects (fewer when they do not fit).
    pub max_objects: usize,
    /// Chance that an image gets an extra small object flagged `ignore`.
    pub difficult_rate: f64,
    pub jpeg_quality: u8,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            images: 300,
            seed: 2007,
            classes: 4,
            min_side: 160,
            max_side: 320,
            max_objects: 3,
            difficult_rate: 0.15,
            jpeg_quality: 90,
        }
    }
}

/// Where the dataset went and what it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    /// `dir/pascal_train2007.json`.
    pub json: PathBuf,
    /// `dir/VOCdevkit/VOC2007`.
    pub voc_dir: PathBuf,
    /// `dir/VOCdevkit/VOC2007/JPEGImages`.
    pub images_dir: PathBuf,
    pub images: usize,
    /// Usable (not ignored) objects.
    pub objects: usize,
    /// Objects flagged `ignore` / `difficult`.
    pub ignored: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("invalid synthetic dataset config: {0}")]
    InvalidConfig(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: encoding JPEG: {source}", path.display())]
    Jpeg {
        path: PathBuf,
        source: image::ImageError,
    },
}

impl SynthConfig {
    fn validate(&self) -> Result<(), SynthError> {
        let bad = |m: String| Err(SynthError::InvalidConfig(m));
        if self.images == 0 {
            return bad("images must be at least 1".into());
        }
        if !(1..=SHAPE_CLASSES.len()).contains(&self.classes) {
            return bad(format!(
                "classes must be 1..={}, got {}",
                SHAPE_CLASSES.len(),
                self.classes
            ));
        }
        if self.min_side < 64 || self.min_side > self.max_side || self.max_side > 4096 {
            return bad(format!(
                "sides must satisfy 64 <= min_side <= max_side <= 4096, got {}..={}",
                self.min_side, self.max_side
            ));
        }
        if self.max_objects == 0 {
            return bad("max_objects must be at least 1".into());
        }
        if !(0.0..=1.0).contains(&self.difficult_rate) {
            return bad(format!(
                "difficult_rate must be in 0..=1, got {}",
                self.difficult_rate
            ));
        }
        if !(1..=100).contains(&self.jpeg_quality) {
            return bad(format!(
                "jpeg_quality must be 1..=100, got {}",
                self.jpeg_quality
            ));
        }
        Ok(())
    }
}

/// The classes a config uses.
pub fn classes(cfg: &SynthConfig) -> &'static [ShapeClass] {
    &SHAPE_CLASSES[..cfg.classes.min(SHAPE_CLASSES.len())]
}

/// The VOC category id (1..20) of a shape class.
pub fn category_id(class: &ShapeClass) -> u32 {
    VOC_CLASSES
        .iter()
        .position(|n| *n == class.name)
        .expect("shape classes use VOC names") as u32
        + 1
}

/// One generated object, box as COCO `[x, y, w, h]` (integers).
#[derive(Debug, Clone, Copy, PartialEq)]
struct SynthObject {
    category_id: u32,
    xywh: [u32; 4],
    difficult: bool,
}

struct SynthImage {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
    objects: Vec<SynthObject>,
}

/// A rectangle `x0..x0+w, y0..y0+h` where a shape is drawn.
#[derive(Debug, Clone, Copy)]
struct Placement {
    class: usize,
    x0: u32,
    y0: u32,
    w: u32,
    h: u32,
    difficult: bool,
}

impl Placement {
    fn area(&self) -> f64 {
        f64::from(self.w) * f64::from(self.h)
    }

    /// Whether the two rectangles come within `margin` pixels of each other.
    fn near(&self, other: &Placement, margin: u32) -> bool {
        self.x0 < other.x0 + other.w + margin
            && other.x0 < self.x0 + self.w + margin
            && self.y0 < other.y0 + other.h + margin
            && other.y0 < self.y0 + self.h + margin
    }
}

/// Generates the dataset into `dir` (created if needed). Everything is built
/// in a temp folder inside `dir` and renamed into place at the end, the JSON
/// last, so a killed run leaves no half-made dataset behind; an existing
/// `dir/VOCdevkit` and `dir/pascal_train2007.json` are replaced.
pub fn generate(dir: &Path, cfg: &SynthConfig) -> Result<Generated, SynthError> {
    cfg.validate()?;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| SynthError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let staging = tempfile::Builder::new()
        .prefix(".synthetic-voc.")
        .tempdir_in(dir)
        .map_err(io(dir))?;
    let voc = staging.path().join("VOCdevkit/VOC2007");
    let (jpeg_dir, xml_dir, sets_dir) = (
        voc.join("JPEGImages"),
        voc.join("Annotations"),
        voc.join("ImageSets/Main"),
    );
    for d in [&jpeg_dir, &xml_dir, &sets_dir] {
        std::fs::create_dir_all(d).map_err(io(d))?;
    }

    let images = make_images(cfg, &jpeg_dir, &xml_dir)?;

    let list: String = images.iter().map(|im| format!("{:06}\n", im.id)).collect();
    let list_path = sets_dir.join("train.txt");
    std::fs::write(&list_path, list).map_err(io(&list_path))?;
    let json_path = staging.path().join("pascal_train2007.json");
    write_json(&json_path, &images)?;

    // Into place: the devkit first, the JSON (the lesson's entry point) last.
    let final_devkit = dir.join("VOCdevkit");
    if final_devkit.exists() {
        let old = staging.path().join("old-VOCdevkit");
        std::fs::rename(&final_devkit, &old).map_err(io(&final_devkit))?;
    }
    std::fs::rename(staging.path().join("VOCdevkit"), &final_devkit).map_err(io(&final_devkit))?;
    let final_json = dir.join("pascal_train2007.json");
    std::fs::rename(&json_path, &final_json).map_err(io(&final_json))?;
    staging.close().map_err(io(dir))?;

    let voc_dir = final_devkit.join("VOC2007");
    let count = |difficult: bool| {
        images
            .iter()
            .flat_map(|im| &im.objects)
            .filter(|o| o.difficult == difficult)
            .count()
    };
    Ok(Generated {
        json: final_json,
        images_dir: voc_dir.join("JPEGImages"),
        voc_dir,
        images: images.len(),
        objects: count(false),
        ignored: count(true),
    })
}

/// Draws and writes every image (JPEG + XML) on all cores, in id order.
fn make_images(
    cfg: &SynthConfig,
    jpeg_dir: &Path,
    xml_dir: &Path,
) -> Result<Vec<SynthImage>, SynthError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(cfg.images);
    let mut per_thread: Vec<Result<Vec<SynthImage>, SynthError>> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (t..cfg.images)
                        .step_by(threads)
                        .map(|index| make_image(cfg, index, jpeg_dir, xml_dir))
                        .collect()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("image worker panicked"))
            .collect()
    });
    let mut images: Vec<SynthImage> = Vec::with_capacity(cfg.images);
    for result in per_thread.drain(..) {
        images.extend(result?);
    }
    images.sort_by_key(|im| im.id);
    Ok(images)
}

fn make_image(
    cfg: &SynthConfig,
    index: usize,
    jpeg_dir: &Path,
    xml_dir: &Path,
) -> Result<SynthImage, SynthError> {
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    rng.set_stream(index as u64);
    let id = index as u64 + 1;
    let (width, height) = (
        rng.random_range(cfg.min_side..=cfg.max_side),
        rng.random_range(cfg.min_side..=cfg.max_side),
    );
    let placements = place_objects(cfg, width, height, &mut rng);
    let mut img = RgbImage::new(width, height);
    draw_background(&mut img, &mut rng);
    let objects: Vec<SynthObject> = placements
        .iter()
        .map(|p| {
            let class = &classes(cfg)[p.class];
            let [left, top, right, bottom] = draw_shape(&mut img, p, class, &mut rng);
            SynthObject {
                category_id: category_id(class),
                xywh: [left, top, right - left + 1, bottom - top + 1],
                difficult: p.difficult,
            }
        })
        .collect();

    let stem = format!("{id:06}");
    let file_name = format!("{stem}.jpg");
    let jpeg_path = jpeg_dir.join(&file_name);
    let file = std::fs::File::create(&jpeg_path).map_err(|source| SynthError::Io {
        path: jpeg_path.clone(),
        source,
    })?;
    let mut out = std::io::BufWriter::new(file);
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, cfg.jpeg_quality)
        .encode_image(&img)
        .map_err(|source| SynthError::Jpeg {
            path: jpeg_path.clone(),
            source,
        })?;
    out.flush().map_err(|source| SynthError::Io {
        path: jpeg_path.clone(),
        source,
    })?;

    let image = SynthImage {
        id,
        file_name,
        width,
        height,
        objects,
    };
    let xml_path = xml_dir.join(format!("{stem}.xml"));
    std::fs::write(&xml_path, voc_xml(&image)).map_err(|source| SynthError::Io {
        path: xml_path,
        source,
    })?;
    Ok(image)
}

/// The largest object first, then smaller ones that keep clear of every
/// other, then possibly a small `difficult` one.
fn place_objects(
    cfg: &SynthConfig,
    width: u32,
    height: u32,
    rng: &mut ChaCha8Rng,
) -> Vec<Placement> {
    let short = width.min(height) as f64;
    let n_classes = cfg.classes;
    let rect = |rng: &mut ChaCha8Rng, area: f64| -> (u32, u32) {
        let aspect: f64 = rng.random_range(0.75..1.33);
        let w = (area * aspect).sqrt().round().clamp(12.0, width as f64) as u32;
        let h = (area / aspect).sqrt().round().clamp(12.0, height as f64) as u32;
        (w, h)
    };
    let side = short * rng.random_range(0.4..0.8);
    let (w, h) = rect(rng, side * side);
    let largest = Placement {
        class: rng.random_range(0..n_classes),
        x0: rng.random_range(0..=width - w),
        y0: rng.random_range(0..=height - h),
        w,
        h,
        difficult: false,
    };
    let mut placed = vec![largest];
    let others = rng.random_range(0..cfg.max_objects);
    let difficult = rng.random_bool(cfg.difficult_rate);
    let mut wanted: Vec<(f64, bool)> = (0..others)
        .map(|_| (rng.random_range(0.08..0.4), false))
        .collect();
    if difficult {
        wanted.push((rng.random_range(0.03..0.1), true));
    }
    for (area_ratio, difficult) in wanted {
        let (w, h) = rect(rng, largest.area() * area_ratio);
        // Rounding and the 12 px floor must not let a box rival the largest.
        if (w as f64) * (h as f64) > largest.area() * MAX_OTHER_AREA_RATIO
            || w >= width
            || h >= height
        {
            continue;
        }
        for _ in 0..40 {
            let candidate = Placement {
                class: rng.random_range(0..n_classes),
                x0: rng.random_range(0..=width - w),
                y0: rng.random_range(0..=height - h),
                w,
                h,
                difficult,
            };
            if placed.iter().all(|p| !p.near(&candidate, 6)) {
                placed.push(candidate);
                break;
            }
        }
    }
    placed
}

/// A muted, near-grey base colour with a gradient, blotches and per-pixel noise.
fn draw_background(img: &mut RgbImage, rng: &mut ChaCha8Rng) {
    let (width, height) = img.dimensions();
    let grey: f32 = rng.random_range(70.0..180.0);
    let base: [f32; 3] = std::array::from_fn(|_| grey + rng.random_range(-15.0..15.0));
    let angle: f32 = rng.random_range(0.0..std::f32::consts::TAU);
    let slope = rng.random_range(20.0..60.0) / width.max(height) as f32;
    let (gx, gy) = (angle.cos() * slope, angle.sin() * slope);
    // Blotches: a coarse grid of random offsets, bilinearly interpolated.
    const CELL: u32 = 40;
    let (cols, rows) = (width / CELL + 2, height / CELL + 2);
    // Mostly brightness, little hue, so that the background never passes for
    // one of the saturated object colours.
    let blotches: Vec<[f32; 3]> = (0..cols * rows)
        .map(|_| {
            let light = rng.random_range(-30.0..30.0);
            std::array::from_fn(|_| light + rng.random_range(-8.0..8.0))
        })
        .collect();
    let (cx, cy) = (width as f32 / 2.0, height as f32 / 2.0);
    for y in 0..height {
        let (row, fy) = ((y / CELL) as usize, (y % CELL) as f32 / CELL as f32);
        for x in 0..width {
            let (col, fx) = ((x / CELL) as usize, (x % CELL) as f32 / CELL as f32);
            let at = |r: usize, c: usize| blotches[r * cols as usize + c];
            let (b00, b01, b10, b11) = (
                at(row, col),
                at(row, col + 1),
                at(row + 1, col),
                at(row + 1, col + 1),
            );
            let noise = rng.next_u32().to_le_bytes();
            let ramp = (x as f32 - cx) * gx + (y as f32 - cy) * gy;
            let pixel: [u8; 3] = std::array::from_fn(|c| {
                let blotch = (b00[c] * (1.0 - fx) + b01[c] * fx) * (1.0 - fy)
                    + (b10[c] * (1.0 - fx) + b11[c] * fx) * fy;
                let v = base[c] + ramp + blotch + (noise[c] as f32 - 127.5) * 0.14;
                v.clamp(0.0, 255.0) as u8
            });
            img.put_pixel(x, y, Rgb(pixel));
        }
    }
}

/// Whether normalised point `(u, v)` (0..1 across the placement) is inside `shape`.
fn inside(shape: Shape, u: f32, v: f32) -> bool {
    let (du, dv) = (u - 0.5, v - 0.5);
    match shape {
        Shape::Disc => du * du + dv * dv <= 0.25,
        Shape::Rectangle => true,
        Shape::Triangle => du.abs() <= v * 0.5,
        Shape::Cross => du.abs() <= 0.17 || dv.abs() <= 0.17,
        Shape::Ring => (0.1..=0.25).contains(&(du * du + dv * dv)),
        Shape::Diamond => du.abs() + dv.abs() <= 0.5,
    }
}

/// Fills the shape with its jittered, shaded, noisy colour; returns the exact
/// extent of the drawn pixels as `[left, top, right, bottom]` (inclusive).
fn draw_shape(
    img: &mut RgbImage,
    p: &Placement,
    class: &ShapeClass,
    rng: &mut ChaCha8Rng,
) -> [u32; 4] {
    let colour: [f32; 3] =
        std::array::from_fn(|c| class.colour[c] as f32 + rng.random_range(-20.0..20.0));
    let shade: f32 = rng.random_range(-0.3..0.3);
    let mut extent = [u32::MAX, u32::MAX, 0, 0];
    for y in p.y0..p.y0 + p.h {
        let v = (y - p.y0) as f32 + 0.5;
        for x in p.x0..p.x0 + p.w {
            let u = (x - p.x0) as f32 + 0.5;
            let (u, v) = (u / p.w as f32, v / p.h as f32);
            if !inside(class.shape, u, v) {
                continue;
            }
            let noise = rng.next_u32().to_le_bytes();
            let light = 1.0 + shade * (u - 0.5) - shade * (v - 0.5);
            let pixel: [u8; 3] = std::array::from_fn(|c| {
                (colour[c] * light + (noise[c] as f32 - 127.5) * 0.08).clamp(0.0, 255.0) as u8
            });
            img.put_pixel(x, y, Rgb(pixel));
            extent = [
                extent[0].min(x),
                extent[1].min(y),
                extent[2].max(x),
                extent[3].max(y),
            ];
        }
    }
    assert!(
        extent[0] != u32::MAX,
        "every shape covers the centre of its placement"
    );
    extent
}

fn voc_xml(image: &SynthImage) -> String {
    let mut xml = format!(
        "<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{}</filename>\n\t<source>\n\t\t<database>synthetic-voc</database>\n\t</source>\n\t<size>\n\t\t<width>{}</width>\n\t\t<height>{}</height>\n\t\t<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n",
        image.file_name, image.width, image.height
    );
    for o in &image.objects {
        let [x, y, w, h] = o.xywh;
        // VOC coordinates are 1-based and inclusive.
        xml += &format!(
            "\t<object>\n\t\t<name>{}</name>\n\t\t<pose>Unspecified</pose>\n\t\t<truncated>0</truncated>\n\t\t<difficult>{}</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{}</xmin>\n\t\t\t<ymin>{}</ymin>\n\t\t\t<xmax>{}</xmax>\n\t\t\t<ymax>{}</ymax>\n\t\t</bndbox>\n\t</object>\n",
            VOC_CLASSES[o.category_id as usize - 1],
            u8::from(o.difficult),
            x + 1,
            y + 1,
            x + w,
            y + h
        );
    }
    xml + "</annotation>\n"
}

#[derive(Serialize)]
struct JsonFile<'a> {
    images: Vec<JsonImage<'a>>,
    #[serde(rename = "type")]
    kind: &'static str,
    annotations: Vec<JsonAnnotation>,
    categories: Vec<JsonCategory>,
}

#[derive(Serialize)]
struct JsonImage<'a> {
    file_name: &'a str,
    height: u32,
    width: u32,
    id: u64,
}

#[derive(Serialize)]
struct JsonAnnotation {
    segmentation: [[u32; 8]; 1],
    area: u32,
    iscrowd: u8,
    image_id: u64,
    bbox: [u32; 4],
    category_id: u32,
    id: u64,
    ignore: u8,
}

#[derive(Serialize)]
struct JsonCategory {
    supercategory: &'static str,
    id: u32,
    name: &'static str,
}

/// The lesson's COCO-style JSON, with the conventions of `pascal_train2007.json`.
fn write_json(path: &Path, images: &[SynthImage]) -> Result<(), SynthError> {
    let annotations = images
        .iter()
        .flat_map(|im| im.objects.iter().map(move |o| (im.id, o)))
        .zip(1..)
        .map(|((image_id, o), id)| {
            let [x, y, w, h] = o.xywh;
            JsonAnnotation {
                segmentation: [[x, y, x, y + h, x + w, y + h, x + w, y]],
                area: w * h,
                iscrowd: 0,
                image_id,
                bbox: o.xywh,
                category_id: o.category_id,
                id,
                ignore: u8::from(o.difficult),
            }
        })
        .collect();
    let file = JsonFile {
        images: images
            .iter()
            .map(|im| JsonImage {
                file_name: &im.file_name,
                height: im.height,
                width: im.width,
                id: im.id,
            })
            .collect(),
        kind: "instances",
        annotations,
        categories: VOC_CLASSES
            .iter()
            .zip(1..)
            .map(|(name, id)| JsonCategory {
                supercategory: "none",
                id,
                name,
            })
            .collect(),
    };
    let bytes = serde_json::to_vec(&file).expect("plain structs serialise");
    std::fs::write(path, bytes).map_err(|source| SynthError::Io {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_class_has_a_voc_name_and_a_distinct_look() {
        for (i, a) in SHAPE_CLASSES.iter().enumerate() {
            assert!((1..=20).contains(&category_id(a)));
            for b in &SHAPE_CLASSES[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.shape, b.shape);
                assert_ne!(a.colour, b.colour);
            }
        }
    }

    #[test]
    fn shapes_touch_all_four_sides_of_their_placement() {
        for class in &SHAPE_CLASSES {
            for (w, h) in [(12, 12), (13, 20), (40, 31), (100, 77)] {
                let p = Placement {
                    class: 0,
                    x0: 3,
                    y0: 5,
                    w,
                    h,
                    difficult: false,
                };
                let mut img = RgbImage::new(120, 100);
                let mut rng = ChaCha8Rng::seed_from_u64(1);
                let extent = draw_shape(&mut img, &p, class, &mut rng);
                let full = [3, 5, 3 + w - 1, 5 + h - 1];
                // The triangle's apex is one pixel wide only when it lands on a pixel centre.
                let tolerance = if class.shape == Shape::Triangle {
                    [0, 1, 0, 0]
                } else {
                    [0; 4]
                };
                for k in 0..4 {
                    assert!(
                        extent[k].abs_diff(full[k]) <= tolerance[k],
                        "{:?} {w}x{h}: {extent:?} vs {full:?}",
                        class.shape
                    );
                }
            }
        }
    }

    #[test]
    fn invalid_configs_are_refused() {
        let base = SynthConfig::default();
        for cfg in [
            SynthConfig {
                images: 0,
                ..base.clone()
            },
            SynthConfig {
                classes: 0,
                ..base.clone()
            },
            SynthConfig {
                classes: 7,
                ..base.clone()
            },
            SynthConfig {
                min_side: 300,
                max_side: 200,
                ..base.clone()
            },
            SynthConfig {
                min_side: 32,
                ..base.clone()
            },
            SynthConfig {
                max_objects: 0,
                ..base.clone()
            },
            SynthConfig {
                difficult_rate: 1.5,
                ..base.clone()
            },
            SynthConfig {
                jpeg_quality: 0,
                ..base.clone()
            },
        ] {
            assert!(
                matches!(cfg.validate(), Err(SynthError::InvalidConfig(_))),
                "{cfg:?}"
            );
        }
        assert!(base.validate().is_ok());
    }
}
