//! What the Learner consumes: batches of normalised images with their targets, from any
//! source that can replay an epoch (the `augment` loader in the binary, tensors in tests).

use crate::TrainError;

/// One batch, in the layout of `augment::Batch`: images NCHW, already normalised.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `n * 3 * size * size` floats, NCHW.
    pub x: Vec<f32>,
    pub n: usize,
    pub size: usize,
    /// Class index per image (classification), else empty.
    pub classes: Vec<i64>,
    /// `[top, left, bottom, right]` in `size x size` input pixels (bbox), else empty.
    pub boxes: Vec<[f32; 4]>,
    /// Every object of each image, boxes in input pixels (the detector), else empty.
    pub objects: Vec<Vec<augment::Object>>,
    /// Position of each image in the dataset the source was built from.
    pub indices: Vec<usize>,
    /// (height, width) of each original image.
    pub orig_sizes: Vec<(u32, u32)>,
    /// The geometric map each image went through (`augment::Batch::moves`), for
    /// mapping boxes predicted on augmented copies back; empty where none moved.
    pub moves: Vec<Option<augment::Affine>>,
}

/// A dataset that yields the same epochs again when asked with the same epoch number.
pub trait DataSource {
    /// Batches one epoch yields.
    fn n_batches(&self) -> usize;
    /// Images in the dataset.
    fn n_items(&self) -> usize;
    /// Epoch `epoch`'s batches; a source that shuffles seeds the order from `epoch`.
    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_>;
}

/// A source over batches held in memory (tests, small experiments); `shuffle_seed`
/// reorders the batches per epoch when set.
#[derive(Debug, Clone)]
pub struct InMemorySource {
    pub batches: Vec<Batch>,
    pub shuffle_seed: Option<u64>,
}

impl DataSource for InMemorySource {
    fn n_batches(&self) -> usize {
        self.batches.len()
    }

    fn n_items(&self) -> usize {
        self.batches.iter().map(|b| b.n).sum()
    }

    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_> {
        let mut order: Vec<usize> = (0..self.batches.len()).collect();
        if let Some(seed) = self.shuffle_seed {
            use rand::seq::SliceRandom;
            use rand::SeedableRng;
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed.wrapping_add(epoch as u64));
            order.shuffle(&mut rng);
        }
        Box::new(order.into_iter().map(move |i| Ok(self.batches[i].clone())))
    }
}

/// fastai 0.7 `get_cv_idxs(n, val_pct, seed)`: a random `floor(val_fraction * n)` of the
/// indices `0..n` as the validation set. fastai draws them with
/// `np.random.seed(seed); np.random.permutation(n)[:n_val]`; here the permutation is a
/// Fisher-Yates shuffle (`rand`'s `SliceRandom::shuffle`) driven by `ChaCha8Rng` seeded
/// with `seed`, so the split is fixed for a seed but not numpy's. Returned sorted.
pub fn cv_indices(n: usize, val_fraction: f64, seed: u64) -> Vec<usize> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let n_val = (val_fraction * n as f64).floor() as usize;
    let mut perm: Vec<usize> = (0..n).collect();
    perm.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    let mut val: Vec<usize> = perm.into_iter().take(n_val).collect();
    val.sort_unstable();
    val
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cv_indices_are_a_fixed_fifth() {
        let a = cv_indices(2501, 0.2, 42);
        assert_eq!(a.len(), 500);
        assert_eq!(a, cv_indices(2501, 0.2, 42));
        assert_ne!(a, cv_indices(2501, 0.2, 43));
        let mut dedup = a.clone();
        dedup.dedup();
        assert_eq!(dedup.len(), 500);
        assert!(a.iter().all(|&i| i < 2501));
        // Spread over the whole range, not a prefix.
        assert!(a.iter().any(|&i| i > 2000) && a.iter().any(|&i| i < 500));
    }
}
