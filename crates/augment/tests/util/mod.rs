//! Helpers shared by the integration tests: small synthetic images on disk and
//! a guard that turns a hang into a test failure.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use image::{Rgb, RgbImage};

/// A deterministic, textured test picture (gradients plus a bright rectangle),
/// different for every `variant`.
pub fn picture(width: u32, height: u32, variant: u32) -> RgbImage {
    RgbImage::from_fn(width, height, |x, y| {
        let in_rect = x > width / 4 && x < width / 2 && y > height / 3 && y < 2 * height / 3;
        if in_rect {
            Rgb([250, 240, (variant * 37 % 256) as u8])
        } else {
            Rgb([
                (x * 255 / width.max(1)) as u8,
                (y * 255 / height.max(1)) as u8,
                ((x + y + variant * 11) % 256) as u8,
            ])
        }
    })
}

pub fn write_jpeg(path: &Path, img: &RgbImage) {
    let file = std::fs::File::create(path).unwrap();
    let mut encoder =
        image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 92);
    encoder.encode_image(img).unwrap();
}

/// Writes `count` JPEGs of assorted sizes into `dir`; returns their paths and (h, w).
pub fn write_jpegs(dir: &Path, count: u32) -> Vec<(PathBuf, (u32, u32))> {
    (0..count)
        .map(|i| {
            let (w, h) = (48 + (i % 5) * 13, 40 + (i % 3) * 17);
            let path = dir.join(format!("img{i:03}.jpg"));
            write_jpeg(&path, &picture(w, h, i));
            (path, (h, w))
        })
        .collect()
}

/// Runs `body` on its own thread and fails the test if it takes more than
/// `secs` seconds (a hang) or panics.
pub fn within<T: Send + 'static>(secs: u64, body: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(body());
    });
    match rx.recv_timeout(Duration::from_secs(secs)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => {
            panic!("no result after {secs} s: the loader hangs")
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("the test body panicked (see above)"),
    }
}

/// The shared VOC 2007 devkit folder, or `None` (with the reason printed) where absent.
pub fn voc_dir() -> Option<PathBuf> {
    shared_voc::voc2007().map(|dir| dir.join(shared_voc::DEVKIT))
}
