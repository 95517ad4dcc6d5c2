//! The multi-threaded loader: worker threads build whole batches, each into its
//! own output buffer, and the epoch iterator hands them out in order.
//!
//! Flow control: the iterator sends batch numbers to the workers over a job
//! channel, never more than `workers + prefetch` ahead of the batch it last
//! yielded, so memory stays bounded; finished batches wait in a reorder buffer
//! until their turn. Every random choice comes from an RNG seeded by
//! `(seed, epoch, item index)`, so batches do not depend on the number of threads
//! or on which thread built them.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::decode::{squash_box, ImagePipeline};
use crate::transform::{augment_into, move_box, move_objects, AugmentDraw};
use crate::{BadImage, Batch, BoxMode, Item, LoadError, LoaderConfig, Object};

pub struct Loader {
    items: Arc<Vec<Item>>,
    cfg: LoaderConfig,
    pool: Arc<BufferPool>,
}

/// Batch buffers handed back with [`Loader::recycle`]. A fresh 38 MB buffer
/// (64 x 3 x 224 x 224 f32) costs thousands of page faults on first write;
/// a recycled one costs none.
#[derive(Default)]
struct BufferPool {
    buffers: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    /// A buffer of `len` values with unspecified contents (every value is overwritten).
    fn take(&self, len: usize) -> Vec<f32> {
        let recycled = self.buffers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        match recycled {
            Some(mut x) if x.capacity() >= len => {
                if x.len() >= len {
                    x.truncate(len);
                } else {
                    x.resize(len, 0.0);
                }
                x
            }
            _ => vec![0f32; len],
        }
    }

    fn give(&self, x: Vec<f32>, keep: usize) {
        let mut buffers = self.buffers.lock().unwrap_or_else(|e| e.into_inner());
        if buffers.len() < keep {
            buffers.push(x);
        }
    }
}

impl Loader {
    /// # Panics
    /// When `cfg.size` or `cfg.batch_size` is 0.
    pub fn new(items: Arc<Vec<Item>>, cfg: LoaderConfig) -> Self {
        assert!(cfg.size > 0, "LoaderConfig.size must be at least 1");
        assert!(
            cfg.batch_size > 0,
            "LoaderConfig.batch_size must be at least 1"
        );
        Self {
            items,
            cfg,
            pool: Arc::default(),
        }
    }

    /// Hands a batch's buffer back for reuse by later batches (optional: call
    /// it once the batch's `x` has been copied, e.g. into a tensor).
    pub fn recycle(&self, batch: Batch) {
        self.pool
            .give(batch.x, self.cfg.workers.max(1) + self.cfg.prefetch + 2);
    }

    pub fn items(&self) -> &Arc<Vec<Item>> {
        &self.items
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    pub fn batches_per_epoch(&self) -> usize {
        if self.cfg.drop_last {
            self.items.len() / self.cfg.batch_size
        } else {
            self.items.len().div_ceil(self.cfg.batch_size)
        }
    }

    /// The item indices of `epoch` in the order they are batched.
    pub fn epoch_order(&self, epoch: u64) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.items.len()).collect();
        if self.cfg.shuffle {
            order.shuffle(&mut ChaCha8Rng::seed_from_u64(stream_seed(
                self.cfg.seed,
                epoch,
                u64::MAX,
            )));
        }
        order
    }

    /// Starts the workers for one epoch. Dropping the iterator early stops and
    /// joins them.
    pub fn epoch(&self, epoch: u64) -> EpochIter {
        let n_batches = self.batches_per_epoch();
        let mut order = self.epoch_order(epoch);
        order.truncate(if self.cfg.drop_last {
            n_batches * self.cfg.batch_size
        } else {
            order.len()
        });
        let shared = Arc::new(EpochShared {
            items: Arc::clone(&self.items),
            cfg: self.cfg.clone(),
            epoch,
            order,
            has_classes: self.items.iter().all(|i| i.class.is_some()),
            has_boxes: self.items.iter().all(|i| i.bbox.is_some()),
            cancel: AtomicBool::new(false),
            pool: Arc::clone(&self.pool),
        });
        let (job_tx, job_rx) = crossbeam_channel::unbounded::<usize>();
        let (result_tx, result_rx) = crossbeam_channel::unbounded();
        let n_workers = self.cfg.workers.max(1).min(n_batches);
        let workers = (0..n_workers)
            .map(|i| {
                let (shared, jobs, results) =
                    (Arc::clone(&shared), job_rx.clone(), result_tx.clone());
                std::thread::Builder::new()
                    .name(format!("augment-{i}"))
                    .spawn(move || worker(&shared, jobs, results))
                    .expect("cannot spawn a loader thread")
            })
            .collect();
        // Only workers hold result senders: if they all die, `recv` fails instead of hanging.
        drop(result_tx);
        let mut iter = EpochIter {
            epoch,
            n_batches,
            next_to_yield: 0,
            next_to_send: 0,
            jobs: Some(job_tx),
            results: result_rx,
            pending: HashMap::new(),
            shared,
            workers,
            skipped: Vec::new(),
            finished: false,
        };
        for _ in 0..(n_workers + self.cfg.prefetch) {
            iter.send_next_job();
        }
        iter
    }
}

/// splitmix64's finaliser: spreads nearby integers over the whole u64 range.
fn splitmix64(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The seed of the random stream for one item in one epoch (`u64::MAX`: the shuffle).
fn stream_seed(seed: u64, epoch: u64, index: u64) -> u64 {
    splitmix64(splitmix64(splitmix64(seed) ^ epoch) ^ index)
}

/// The random augmentation `item_index` gets in `epoch` under `seed`.
pub(crate) fn image_rng(seed: u64, epoch: u64, item_index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(stream_seed(seed, epoch, item_index as u64))
}

struct EpochShared {
    items: Arc<Vec<Item>>,
    cfg: LoaderConfig,
    epoch: u64,
    order: Vec<usize>,
    has_classes: bool,
    has_boxes: bool,
    /// Set when the consumer no longer wants batches: workers stop between images.
    cancel: AtomicBool,
    pool: Arc<BufferPool>,
}

struct BuiltBatch {
    batch: Batch,
    skipped: Vec<LoadError>,
}

type Outcome = Result<BuiltBatch, LoadError>;

fn worker(shared: &EpochShared, jobs: Receiver<usize>, results: Sender<(usize, Outcome)>) {
    let mut pipeline = ImagePipeline::new();
    for batch_index in jobs.iter() {
        if shared.cancel.load(Ordering::Relaxed) {
            break;
        }
        let outcome = match &mut pipeline {
            Ok(pipeline) => std::panic::catch_unwind(AssertUnwindSafe(|| {
                build_batch(shared, batch_index, pipeline)
            }))
            .unwrap_or_else(|panic| {
                Err(LoadError::WorkerPanicked {
                    batch: batch_index,
                    message: crate::decode::panic_message(panic.as_ref()),
                })
            }),
            Err(reason) => Err(LoadError::Init {
                reason: reason.clone(),
            }),
        };
        if matches!(outcome, Err(LoadError::WorkerPanicked { .. })) {
            // The scratch state may be half-updated; start clean.
            pipeline = ImagePipeline::new();
        }
        if results.send((batch_index, outcome)).is_err() {
            break;
        }
    }
}

fn build_batch(shared: &EpochShared, batch_index: usize, pipeline: &mut ImagePipeline) -> Outcome {
    let cfg = &shared.cfg;
    let size = cfg.size;
    let per_image = 3 * (size as usize) * (size as usize);
    let start = batch_index * cfg.batch_size;
    let indices = &shared.order[start..(start + cfg.batch_size).min(shared.order.len())];
    let box_mode = cfg.augment.map(|a| a.box_mode).unwrap_or(BoxMode::Tight);
    // Unaugmented images (validation) lose no object: every one is scored.
    let min_visible = cfg.augment.map_or(0.0, |a| a.min_visible);

    let mut x = shared.pool.take(indices.len() * per_image);
    let mut batch = Batch {
        x: Vec::new(),
        n: 0,
        size,
        classes: Vec::with_capacity(indices.len()),
        boxes: Vec::with_capacity(indices.len()),
        objects: Vec::with_capacity(indices.len()),
        dropped_objects: 0,
        indices: Vec::with_capacity(indices.len()),
        orig_sizes: Vec::with_capacity(indices.len()),
        moves: Vec::with_capacity(indices.len()),
    };
    let mut skipped = Vec::new();
    for &item_index in indices {
        if shared.cancel.load(Ordering::Relaxed) {
            break; // nobody will read this batch
        }
        let item = &shared.items[item_index];
        let draw = cfg
            .augment
            .map(|params| AugmentDraw::for_item(&params, cfg.seed, shared.epoch, item_index));
        let orig_size = match pipeline.load_squashed(&item.path, size, cfg.orientation) {
            Ok(orig_size) => orig_size,
            Err(error) if cfg.on_bad_image == BadImage::Skip => {
                tracing::warn!("skipping image: {error}");
                skipped.push(error);
                continue;
            }
            Err(error) => return Err(error),
        };
        let out = &mut x[batch.n * per_image..][..per_image];
        let forward = augment_into(
            &pipeline.squashed,
            (size, size),
            draw.as_ref(),
            &cfg.normalisation,
            &mut pipeline.scratch,
            out,
        );
        let bbox = item.bbox.map(|b| {
            move_box(
                squash_box(b, orig_size, size),
                forward.as_ref(),
                box_mode,
                size,
                size,
            )
            .bbox
        });
        let (objects, dropped) = move_objects(
            item.objects.iter().map(|object| Object {
                bbox: squash_box(object.bbox, orig_size, size),
                ..*object
            }),
            forward.as_ref(),
            box_mode,
            min_visible,
            size,
            size,
        );
        if shared.has_classes {
            batch.classes.push(item.class.unwrap_or_default());
        }
        if shared.has_boxes {
            batch.boxes.push(bbox.unwrap_or_default());
        }
        batch.objects.push(objects);
        batch.dropped_objects += dropped;
        batch.indices.push(item_index);
        batch.orig_sizes.push(orig_size);
        batch.moves.push(forward);
        batch.n += 1;
    }
    x.truncate(batch.n * per_image);
    batch.x = x;
    Ok(BuiltBatch { batch, skipped })
}

/// The batches of one epoch, in order. Ends after the last batch or after the
/// first error.
pub struct EpochIter {
    epoch: u64,
    n_batches: usize,
    next_to_yield: usize,
    next_to_send: usize,
    jobs: Option<Sender<usize>>,
    results: Receiver<(usize, Outcome)>,
    pending: HashMap<usize, Outcome>,
    shared: Arc<EpochShared>,
    workers: Vec<JoinHandle<()>>,
    skipped: Vec<LoadError>,
    finished: bool,
}

impl EpochIter {
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Images left out so far this epoch under [`BadImage::Skip`], with the
    /// reason (each names its file). Complete once the iterator has ended.
    pub fn skipped(&self) -> &[LoadError] {
        &self.skipped
    }

    fn send_next_job(&mut self) {
        if self.next_to_send < self.n_batches {
            if let Some(jobs) = &self.jobs {
                // Fails only when every worker has exited; `next` then reports it.
                let _ = jobs.send(self.next_to_send);
            }
            self.next_to_send += 1;
        }
    }

    /// Stops the workers (they finish their current image) and reports skips.
    fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.jobs = None;
        if !self.skipped.is_empty() {
            let files: Vec<String> = self
                .skipped
                .iter()
                .filter_map(|e| e.path())
                .map(|p| p.display().to_string())
                .collect();
            tracing::warn!(
                "epoch {}: skipped {} unreadable images: {}",
                self.epoch,
                self.skipped.len(),
                files.join(", ")
            );
        }
    }

    fn next_outcome(&mut self) -> Outcome {
        loop {
            if let Some(outcome) = self.pending.remove(&self.next_to_yield) {
                return outcome;
            }
            match self.results.recv() {
                Ok((index, outcome)) => {
                    self.pending.insert(index, outcome);
                }
                Err(_) => {
                    return Err(LoadError::WorkerPanicked {
                        batch: self.next_to_yield,
                        message: "every loader thread exited".into(),
                    })
                }
            }
        }
    }
}

impl Iterator for EpochIter {
    type Item = Result<Batch, LoadError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.finished {
                return None;
            }
            if self.next_to_yield >= self.n_batches {
                self.finish();
                return None;
            }
            let outcome = self.next_outcome();
            self.next_to_yield += 1;
            self.send_next_job();
            match outcome {
                Ok(built) => {
                    self.skipped.extend(built.skipped);
                    if self.next_to_yield == self.n_batches {
                        self.finish();
                    }
                    // A batch whose every image was skipped is not worth yielding.
                    if built.batch.n > 0 {
                        return Some(Ok(built.batch));
                    }
                }
                Err(error) => {
                    self.finish();
                    return Some(Err(error));
                }
            }
        }
    }
}

impl Drop for EpochIter {
    fn drop(&mut self) {
        self.shared.cancel.store(true, Ordering::Relaxed);
        self.jobs = None;
        for worker in self.workers.drain(..) {
            // A worker's panic was already turned into an error or is moot now.
            let _ = worker.join();
        }
    }
}
