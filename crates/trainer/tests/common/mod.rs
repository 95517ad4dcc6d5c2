//! Synthetic in-memory data: one coloured rectangle per image on a noisy background;
//! its colour is the class, its extent the box.
#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use tch::{nn, Device};
use trainer::{Batch, InMemorySource, Learner, Task, TinyCnn};

pub mod jpegs;

pub const CLASS_COLOURS: [[f32; 3]; 3] = [[1.5, -1.0, -1.0], [-1.0, 1.5, -1.0], [-1.0, -1.0, 1.5]];

pub struct Sample {
    pub pixels: Vec<f32>,
    pub class: i64,
    pub bbox: [f32; 4],
}

pub fn samples(n: usize, size: usize, seed: u64) -> Vec<Sample> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let class = rng.random_range(0..3usize);
            let h = rng.random_range(size / 4..size * 3 / 4);
            let w = rng.random_range(size / 4..size * 3 / 4);
            let top = rng.random_range(0..size - h);
            let left = rng.random_range(0..size - w);
            let mut pixels = vec![0f32; 3 * size * size];
            for c in 0..3 {
                for y in 0..size {
                    for x in 0..size {
                        let inside = y >= top && y < top + h && x >= left && x < left + w;
                        let noise: f32 = rng.random_range(-0.3..0.3);
                        pixels[(c * size + y) * size + x] =
                            if inside { CLASS_COLOURS[class][c] } else { 0.0 } + noise;
                    }
                }
            }
            let bbox = [
                top as f32,
                left as f32,
                (top + h - 1) as f32,
                (left + w - 1) as f32,
            ];
            Sample {
                pixels,
                class: class as i64,
                bbox,
            }
        })
        .collect()
}

pub fn source(
    samples: &[Sample],
    size: usize,
    batch: usize,
    shuffle_seed: Option<u64>,
) -> InMemorySource {
    let batches = samples
        .chunks(batch)
        .enumerate()
        .map(|(b, chunk)| Batch {
            x: chunk
                .iter()
                .flat_map(|s| s.pixels.iter().copied())
                .collect(),
            n: chunk.len(),
            size,
            classes: chunk.iter().map(|s| s.class).collect(),
            boxes: chunk.iter().map(|s| s.bbox).collect(),
            objects: Vec::new(),
            indices: (b * batch..b * batch + chunk.len()).collect(),
            orig_sizes: vec![(size as u32, size as u32); chunk.len()],
            moves: Vec::new(),
        })
        .collect();
    InMemorySource {
        batches,
        shuffle_seed,
    }
}

pub fn tiny_learner(task: Task, size: usize, seed: i64) -> Learner<TinyCnn> {
    tch::manual_seed(seed);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = TinyCnn::new(&vs.root(), task.outputs());
    let mut learner = Learner::new(vs, model, task, size);
    learner.progress = false;
    learner.print_table = false;
    learner
}

pub fn classify() -> Task {
    Task::Classify {
        classes: vec!["blue".into(), "green".into(), "red".into()],
    }
}

/// Every variable (parameters and BatchNorm buffers) copied out, by name.
pub fn snapshot(vs: &nn::VarStore) -> Vec<(String, tch::Tensor)> {
    let mut v: Vec<_> = vs
        .variables()
        .into_iter()
        .map(|(n, t)| (n, t.detach().copy()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
