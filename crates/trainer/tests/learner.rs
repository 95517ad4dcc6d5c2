//! The Learner's contract on a tiny CNN and synthetic in-memory data.

mod common;

use common::*;
use std::collections::HashMap;
use trainer::task::BOX_UNITS;
use trainer::{
    checkpoint, AugmentedCopies, Batch, DataSource, FitConfig, FitResume, Task, TrainError, Tta,
};

const SIZE: usize = 32;

fn sgdr(lr: f64, cycles: usize) -> FitConfig {
    FitConfig {
        lrs: vec![lr],
        cycles,
        cycle_len: Some(1),
        cycle_mult: 1,
        use_clr: None,
    }
}

fn no_checkpoints() -> impl FnMut(trainer::EpochEnd<'_>) -> Result<(), TrainError> {
    |_| Ok(())
}

#[test]
fn frozen_groups_do_not_move_and_keep_their_batchnorm_statistics() {
    let data = samples(64, SIZE, 1);
    let train = source(&data, SIZE, 16, Some(1));
    let mut learner = tiny_learner(classify(), SIZE, 0);
    learner.freeze_to(-1);
    assert_eq!(learner.trainable_groups(), &[false, false, true]);
    let before = snapshot(&learner.vs);
    learner
        .fit(
            &train,
            &train,
            &sgdr(1e-2, 1),
            0,
            None,
            &mut no_checkpoints(),
        )
        .unwrap();
    let after: HashMap<_, _> = snapshot(&learner.vs).into_iter().collect();
    let mut head_moved = false;
    for (name, old) in &before {
        let same = old.equal(&after[name]);
        if name.starts_with("g0.") || name.starts_with("g1.") {
            // Weights, biases and running_mean / running_var / num_batches_tracked alike.
            assert!(same, "frozen variable {name} changed");
        } else {
            head_moved |= !same;
        }
    }
    assert!(head_moved, "the trainable head did not change");

    // freeze_to(-2) releases the second body group, which then moves, BN stats included.
    learner.freeze_to(-2);
    let before = snapshot(&learner.vs);
    learner
        .fit(
            &train,
            &train,
            &sgdr(1e-2, 1),
            1,
            None,
            &mut no_checkpoints(),
        )
        .unwrap();
    let after: HashMap<_, _> = snapshot(&learner.vs).into_iter().collect();
    for (name, old) in &before {
        let same = old.equal(&after[name]);
        if name.starts_with("g0.") {
            assert!(same, "frozen variable {name} changed");
        } else if name.starts_with("g1.") && !name.ends_with("num_batches_tracked") {
            assert!(!same, "unfrozen variable {name} did not change");
        }
    }
}

#[test]
fn lr_find_restores_weights_and_walks_the_rates() {
    let data = samples(96, SIZE, 2);
    let train = source(&data, SIZE, 4, Some(2));
    let mut learner = tiny_learner(classify(), SIZE, 0);
    let before = snapshot(&learner.vs);
    let found = learner.lr_find(&train, &[1e-5], 10.0, 0).unwrap();
    for ((name, old), (_, new)) in before.iter().zip(snapshot(&learner.vs)) {
        assert!(old.equal(&new), "{name} not restored");
    }
    let n = train.n_batches() as f64;
    assert!(found.points.len() > 11, "{} points", found.points.len());
    for p in &found.points {
        let want = 1e-5 * (1e6f64).powf(p.iteration as f64 / n);
        assert!(
            (p.lr - want).abs() < 1e-9 * want,
            "iteration {}: {} vs {want}",
            p.iteration,
            p.lr
        );
    }
    assert!(found.points.iter().all(|p| p.lr < 10.0));
    assert!((found.suggested_lr - found.min_loss_lr / 10.0).abs() < 1e-15);
    assert!(found.points.iter().any(|p| p.lr == found.min_loss_lr));
}

/// Training data whose images turn NaN from epoch `poison_from` on.
struct Poisoned {
    inner: trainer::InMemorySource,
    poison_from: usize,
}

impl DataSource for Poisoned {
    fn n_batches(&self) -> usize {
        self.inner.n_batches()
    }
    fn n_items(&self) -> usize {
        self.inner.n_items()
    }
    fn batches(&self, epoch: usize) -> Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_> {
        let poison = epoch >= self.poison_from;
        Box::new(self.inner.batches(epoch).map(move |b| {
            b.map(|mut b| {
                if poison {
                    b.x.iter_mut().for_each(|v| *v = f32::NAN);
                }
                b
            })
        }))
    }
}

#[test]
fn nan_loss_stops_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let data = samples(32, SIZE, 3);
    let valid = source(&data, SIZE, 16, None);
    let train = Poisoned {
        inner: source(&data, SIZE, 16, Some(3)),
        poison_from: 2,
    };
    let mut learner = tiny_learner(classify(), SIZE, 0);
    let mut saved_epochs = Vec::new();
    let mut save = |end: trainer::EpochEnd<'_>| {
        let tensors: Vec<_> = end.vs.variables().into_iter().collect();
        checkpoint::save(
            &ckpt,
            &tensors,
            &serde_json::json!({"epoch": end.record.epoch}),
        )?;
        saved_epochs.push(end.record.epoch);
        Ok(())
    };
    let err = learner
        .fit(&train, &valid, &sgdr(1e-3, 4), 0, None, &mut save)
        .unwrap_err();
    assert!(
        matches!(
            err,
            TrainError::NonFiniteLoss {
                epoch: 2,
                iteration: 4,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("last good checkpoint"), "{err}");
    assert_eq!(saved_epochs, vec![0, 1]);
    let (tensors, meta) = checkpoint::load(&ckpt).unwrap();
    assert_eq!(meta["epoch"], 1);
    // The bad step was not applied: the weights are still those of the checkpoint (the
    // BatchNorm buffers have seen the bad batch's forward pass; the file has not).
    for p in learner.params() {
        assert!(
            tensors[&p.name].equal(&p.tensor),
            "{} differs from the checkpoint",
            p.name
        );
    }
}

#[test]
fn resumed_fit_ends_where_an_uninterrupted_one_does() {
    let data = samples(48, SIZE, 4);
    let train = source(&data, SIZE, 8, Some(4));
    let valid = source(&data[..16], SIZE, 8, None);
    let config = FitConfig {
        lrs: vec![1e-3, 3e-3, 1e-2],
        cycles: 2,
        cycle_len: Some(1),
        cycle_mult: 2,
        use_clr: None,
    };

    let mut straight = tiny_learner(classify(), SIZE, 7);
    straight.freeze_to(-2);
    let all = straight
        .fit(&train, &valid, &config, 0, None, &mut no_checkpoints())
        .unwrap();
    assert_eq!(all.len(), 3);

    // Interrupted after epoch 1: the observer saves state, then fails like a kill would.
    let dir = tempfile::tempdir().unwrap();
    let ckpt = dir.path().join("ckpt.safetensors");
    let mut first = tiny_learner(classify(), SIZE, 7);
    first.freeze_to(-2);
    let mut interrupt = |end: trainer::EpochEnd<'_>| {
        let mut tensors: Vec<_> = end.vs.variables().into_iter().collect();
        tensors.extend(end.optimiser.state_tensors());
        checkpoint::save(&ckpt, &tensors, &end.position)?;
        if end.position.epochs_done == 2 {
            return Err(TrainError::Stopped { epochs_done: 2 });
        }
        Ok(())
    };
    assert!(first
        .fit(&train, &valid, &config, 0, None, &mut interrupt)
        .is_err());

    let (tensors, meta) = checkpoint::load(&ckpt).unwrap();
    let position: trainer::FitPosition = serde_json::from_value(meta).unwrap();
    assert_eq!(position.epochs_done, 2);
    let mut resumed = tiny_learner(classify(), SIZE, 99); // different init, overwritten below
    checkpoint::copy_into(&resumed.vs, &tensors, &ckpt).unwrap();
    resumed.freeze_to(-2);
    let resume = FitResume {
        position,
        optimiser_tensors: tensors,
    };
    let rest = resumed
        .fit(
            &train,
            &valid,
            &config,
            0,
            Some(resume),
            &mut no_checkpoints(),
        )
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].epoch, 2);
    assert!(
        (rest[0].trn_loss - all[2].trn_loss).abs() < 1e-9,
        "{} vs {}",
        rest[0].trn_loss,
        all[2].trn_loss
    );
    for (name, var) in straight.vs.variables() {
        let other = &resumed.vs.variables()[&name];
        let diff = (&var - other).abs().max().double_value(&[]);
        assert!(diff < 1e-6, "{name} differs by {diff}");
    }
}

#[test]
fn classifier_beats_chance_and_boxes_beat_the_mean_box() {
    let train_data = samples(384, SIZE, 10);
    let valid_data = samples(96, SIZE, 11);
    let train = source(&train_data, SIZE, 32, Some(10));
    let valid = source(&valid_data, SIZE, 32, None);

    let mut learner = tiny_learner(classify(), SIZE, 1);
    learner
        .fit(
            &train,
            &valid,
            &sgdr(1e-2, 3),
            0,
            None,
            &mut no_checkpoints(),
        )
        .unwrap();
    let accuracy = learner.validate(&valid).unwrap().values(&learner.task)[0];
    eprintln!("synthetic classifier: accuracy {accuracy:.3}");
    assert!(accuracy > 0.8, "accuracy {accuracy} (chance is 1/3)");

    let mut learner = tiny_learner(Task::Bbox, SIZE, 1);
    // Boxes are learnt in 224-pixel units (targets up to ~200), so the head needs a
    // brisk rate to get there in a few epochs from a random start.
    let config = FitConfig {
        lrs: vec![5e-2],
        cycles: 1,
        cycle_len: Some(8),
        cycle_mult: 1,
        use_clr: None,
    };
    learner
        .fit(&train, &valid, &config, 0, None, &mut no_checkpoints())
        .unwrap();
    let l1 = learner.validate(&valid).unwrap().values(&learner.task)[0];
    let mut mean = [0f32; 4];
    for s in &train_data {
        for k in 0..4 {
            mean[k] += s.bbox[k] / train_data.len() as f32;
        }
    }
    // The mean box's L1 in the same 224-pixel units as the metric (the samples'
    // boxes are in SIZE-pixel input units).
    let baseline: f32 = valid_data
        .iter()
        .map(|s| (0..4).map(|k| (s.bbox[k] - mean[k]).abs()).sum::<f32>())
        .sum::<f32>()
        / (4 * valid_data.len()) as f32
        * (BOX_UNITS as f32 / SIZE as f32);
    eprintln!("synthetic boxes: L1 {l1:.2} px, mean-box baseline {baseline:.2} px (224-px units)");
    assert!(
        (l1 as f32) < 0.6 * baseline,
        "box L1 {l1} px vs mean-box baseline {baseline} px"
    );
}

#[test]
fn augmented_copies_are_averaged_image_by_image_and_must_hold_the_same_images() {
    let valid_data = samples(40, SIZE, 11);
    let valid = source(&valid_data, SIZE, 16, None);
    let learner = tiny_learner(Task::Bbox, SIZE, 1);
    // A copy that is each image mirrored, its moves saying so: averaged in and
    // mapped back, it is what flip TTA does.
    let mut mirrored = source(&valid_data, SIZE, 16, None);
    for batch in &mut mirrored.batches {
        for row in batch.x.chunks_mut(SIZE) {
            row.reverse();
        }
        batch.moves = vec![Some(augment::Affine::hflip(SIZE as u32)); batch.n];
    }
    let boxes = |tta: Tta| -> Vec<[f32; 4]> {
        let (predictions, _) = learner.predict(&valid, tta).unwrap();
        predictions.iter().map(|p| p.bbox.unwrap()).collect()
    };
    fn copy(source: &dyn DataSource) -> Tta<'_> {
        Tta {
            flip: false,
            augmented: Some(AugmentedCopies { source, copies: 1 }),
        }
    }
    let (plain, flipped, with_copy) = (boxes(Tta::NONE), boxes(Tta::FLIP), boxes(copy(&mirrored)));
    assert_eq!(with_copy.len(), 40);
    for (got, want) in with_copy.iter().flatten().zip(flipped.iter().flatten()) {
        assert!((got - want).abs() < 1e-3, "{got} against flip TTA's {want}");
    }
    assert_ne!(plain, with_copy, "the copy was averaged in");
    // A copy whose batches hold other images is refused, not averaged with the wrong ones.
    let other_batches = source(&valid_data, SIZE, 8, None);
    assert!(matches!(
        learner.predict(&valid, copy(&other_batches)),
        Err(TrainError::TtaCopyMisaligned { copy: 0 })
    ));
}
