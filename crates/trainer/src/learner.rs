//! The Learner: fastai 0.7's `lr_find`, `fit` (SGDR / CLR, differential learning rates),
//! `freeze_to` / `unfreeze`, over any `LayeredModel` and `DataSource`.

use crate::data::{Batch, DataSource};
use crate::model::LayeredModel;
use crate::optim::{Optimiser, OptimiserConfig, Param};
use crate::schedule::{fit_epochs, lr_finder_multiplier, Schedule, SmoothedLoss};
use crate::task::{MetricSums, Outputs, Targets, Task, BOX_UNITS};
use crate::tta::Tta;
use crate::TrainError;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::time::Instant;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// One `fit` call: `fit(lrs, n_cycle, cycle_len=.., cycle_mult=.., use_clr=..)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitConfig {
    /// One rate for every layer group, or one per group (differential learning rates).
    pub lrs: Vec<f64>,
    pub cycles: usize,
    /// Epochs per (first) cycle; `None` runs `cycles` epochs at a constant rate.
    pub cycle_len: Option<usize>,
    pub cycle_mult: usize,
    /// fastai 0.7 `use_clr=(div, cut_div)`: a triangular cycle instead of SGDR.
    pub use_clr: Option<(f64, usize)>,
}

impl FitConfig {
    pub fn epochs(&self) -> usize {
        fit_epochs(self.cycles, self.cycle_len, self.cycle_mult)
    }

    pub fn schedule(&self, batches_per_epoch: usize) -> Schedule {
        match (self.use_clr, self.cycle_len) {
            (Some((div, cut_div)), len) => Schedule::Circular {
                cycle_batches: batches_per_epoch * len.unwrap_or(1),
                div,
                cut_div,
            },
            (None, Some(len)) => Schedule::CosAnneal {
                first_cycle_batches: batches_per_epoch * len,
                cycle_mult: self.cycle_mult,
            },
            (None, None) => Schedule::Constant,
        }
    }
}

/// One row of the metrics table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number across the whole run (all fit calls of a stage), from 0.
    pub epoch: usize,
    pub trn_loss: f64,
    pub val_loss: f64,
    /// Values for `Task::metric_names`.
    pub metrics: Vec<f64>,
    pub seconds: f64,
}

/// Where a fit stands after an epoch; what a checkpoint needs to continue it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FitPosition {
    /// Epochs of this fit completed.
    pub epochs_done: usize,
    /// Batches of this fit completed (the schedule's index).
    pub iteration: usize,
    pub smoothed_avg: f64,
    pub smoothed_batches: u32,
    /// Optimiser steps so far (checkpoints before SGD support named it `adam_steps`).
    #[serde(alias = "adam_steps")]
    pub optimiser_steps: u64,
}

/// Handed to the epoch-end observer (checkpointing, logging).
pub struct EpochEnd<'a> {
    pub record: &'a EpochRecord,
    pub position: &'a FitPosition,
    pub vs: &'a VarStore,
    pub optimiser: &'a Optimiser,
}

/// State to continue an interrupted fit with.
pub struct FitResume {
    pub position: FitPosition,
    pub optimiser_tensors: HashMap<String, Tensor>,
}

/// One point of the lr_find curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrPoint {
    pub iteration: usize,
    /// The last layer group's rate (fastai records `layer_opt.lr`).
    pub lr: f64,
    pub loss: f64,
    pub smooth_loss: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LrFindResult {
    pub points: Vec<LrPoint>,
    /// Rate at the lowest smoothed loss (after the first 10 batches, which fastai's plot
    /// skips too, when there are more than that).
    pub min_loss_lr: f64,
    /// `min_loss_lr / 10`: the rule of thumb the lesson applies by eye (pick a rate an
    /// order of magnitude below the minimum, where the loss still falls steeply).
    pub suggested_lr: f64,
}

/// Model outputs for one image of a prediction pass.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// Position of the image in the data source.
    pub index: usize,
    /// The most probable class and its probability, for the tasks that classify.
    pub class: Option<(usize, f32)>,
    /// Box in input pixels (`size x size`), for the tasks with boxes.
    pub bbox: Option<[f32; 4]>,
    /// The detector's detections, boxes in `0..1` units of the input.
    pub detections: Vec<multibox::nms::Detection>,
    /// The original image's (height, width).
    pub orig_size: (u32, u32),
}

pub struct Learner<M: LayeredModel> {
    pub vs: VarStore,
    pub model: M,
    pub task: Task,
    /// Side of the square input images, in pixels.
    pub input_size: usize,
    pub optimiser: OptimiserConfig,
    /// Draw indicatif progress bars (off in tests).
    pub progress: bool,
    /// Print the epoch table to stdout.
    pub print_table: bool,
    /// Torch's random stream (dropout, drop-connect) is reseeded from `(seed, epoch)` at
    /// the start of every epoch of `fit` and of `lr_find`, so an epoch draws the same
    /// whatever ran before it in the process: a run resumed from a checkpoint draws
    /// exactly what the uninterrupted run did, with no generator state to save.
    pub seed: u64,
    /// Label smoothing of the training cross-entropy (0: none); validation never has it.
    pub label_smoothing: f64,
    params: Vec<Param>,
    trainable_groups: Vec<bool>,
}

impl<M: LayeredModel> Learner<M> {
    /// A learner over every trainable variable of `vs`, all groups trainable.
    pub fn new(vs: VarStore, model: M, task: Task, input_size: usize) -> Learner<M> {
        let trainable_ptrs: HashSet<usize> = vs
            .trainable_variables()
            .iter()
            .map(|t| t.data_ptr() as usize)
            .collect();
        let mut named: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
        named.sort_by(|a, b| a.0.cmp(&b.0));
        let params = named
            .into_iter()
            .filter(|(_, t)| trainable_ptrs.contains(&(t.data_ptr() as usize)))
            .map(|(name, tensor)| {
                let group = model.group_of(&name);
                Param {
                    name,
                    tensor,
                    group,
                }
            })
            .collect();
        let n_groups = model.n_groups();
        let mut learner = Learner {
            vs,
            model,
            task,
            input_size,
            optimiser: OptimiserConfig::default(),
            progress: true,
            print_table: true,
            seed: 0,
            label_smoothing: 0.0,
            params,
            trainable_groups: vec![true; n_groups],
        };
        learner.unfreeze();
        learner
    }

    pub fn device(&self) -> Device {
        self.vs.device()
    }

    pub fn n_groups(&self) -> usize {
        self.trainable_groups.len()
    }

    pub fn trainable_groups(&self) -> &[bool] {
        &self.trainable_groups
    }

    /// The trainable variables with their layer groups.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// fastai `freeze_to(n)`: groups before `n` frozen, from `n` on trainable; a negative
    /// `n` counts from the end (`freeze_to(-1)` trains only the head). Frozen groups get
    /// no gradient and run in eval mode (BatchNorm running statistics left alone).
    pub fn freeze_to(&mut self, n: i64) {
        let groups = self.n_groups() as i64;
        let first_trainable = if n < 0 {
            (groups + n).max(0)
        } else {
            n.min(groups)
        } as usize;
        for (g, trainable) in self.trainable_groups.iter_mut().enumerate() {
            *trainable = g >= first_trainable;
        }
        for p in &self.params {
            let _ = p.tensor.set_requires_grad(self.trainable_groups[p.group]);
        }
    }

    pub fn unfreeze(&mut self) {
        self.freeze_to(0);
    }

    /// Expands one rate to all groups, or checks there is one per group.
    pub fn group_lrs(&self, lrs: &[f64]) -> Result<Vec<f64>, TrainError> {
        match lrs.len() {
            1 => Ok(vec![lrs[0]; self.n_groups()]),
            n if n == self.n_groups() => Ok(lrs.to_vec()),
            given => Err(TrainError::LrCount {
                given,
                groups: self.n_groups(),
            }),
        }
    }

    fn new_optimiser(&self) -> Optimiser {
        let trainable = self
            .params
            .iter()
            .filter(|p| self.trainable_groups[p.group])
            .map(Param::shallow_clone)
            .collect();
        Optimiser::new(trainable, self.n_groups(), self.optimiser)
    }

    /// Reseeds torch's global generator for `epoch` (see `Learner::seed`).
    fn seed_torch_for_epoch(&self, epoch: usize) {
        let key = [self.seed.to_le_bytes(), (epoch as u64).to_le_bytes()].concat();
        let hash = blake3::hash(&key);
        let first: [u8; 8] = hash.as_bytes()[..8]
            .try_into()
            .expect("a blake3 hash has 32 bytes");
        // Non-negative: torch takes the seed as an unsigned 64-bit number.
        tch::manual_seed((u64::from_le_bytes(first) >> 1) as i64);
    }

    fn to_device(&self, batch: &Batch) -> (Tensor, Targets) {
        let s = batch.size as i64;
        let device = self.device();
        let x = Tensor::from_slice(&batch.x)
            .view([batch.n as i64, 3, s, s])
            .to_device(device);
        (x, self.task.targets(batch, device))
    }

    /// One optimiser step on a batch; returns the batch loss (not yet checked for NaN).
    fn train_step(&self, optimiser: &mut Optimiser, batch: &Batch) -> f64 {
        let (x, targets) = self.to_device(batch);
        let out = self
            .task
            .decode(&self.model.forward(&x, &self.trainable_groups));
        let loss = self
            .task
            .training_loss(&out, &targets, batch.size, self.label_smoothing);
        optimiser.zero_grad();
        loss.backward();
        let value = loss.double_value(&[]);
        if value.is_finite() {
            optimiser.step();
        }
        value
    }

    fn progress_bar(&self, len: usize, prefix: String) -> ProgressBar {
        if !self.progress {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len as u64).with_prefix(prefix);
        bar.set_style(
            ProgressStyle::with_template("{prefix} {percent:>3}%|{wide_bar}| {pos}/{len} [{elapsed}<{eta}, {per_sec}, loss={msg}]")
                .expect("static template")
                .progress_chars("█▉▊▋▌▍▎▏ "),
        );
        bar
    }

    /// fastai 0.7 `lr_find(start_lr, end_lr)`: one epoch with the rate growing
    /// geometrically from `start` to `end`, stopping when the smoothed loss is NaN or
    /// exceeds 4x the best so far; weights and BatchNorm statistics are restored after.
    /// `start` is one rate or one per layer group (the ratio comes from the last group).
    pub fn lr_find(
        &mut self,
        data: &dyn DataSource,
        start: &[f64],
        end: f64,
        loader_epoch: usize,
    ) -> Result<LrFindResult, TrainError> {
        let start = self.group_lrs(start)?;
        let start_last = *start.last().expect("at least one group");
        let saved: Vec<(Tensor, Tensor)> = self
            .vs
            .variables()
            .into_values()
            .map(|v| (v.shallow_clone(), v.detach().copy()))
            .collect();
        // A fresh optimiser, as fastai's lr_find builds its own layer_opt; the fit after
        // it builds another, so no optimiser state outlives the search.
        let mut optimiser = self.new_optimiser();
        let batches = data.n_batches();
        let bar = self.progress_bar(batches, "lr_find".into());
        let mut smoothed = SmoothedLoss::default();
        let mut best = 1e9f64;
        let mut points = Vec::new();
        self.seed_torch_for_epoch(loader_epoch);
        let result = (|| {
            for (i, batch) in data.batches(loader_epoch).enumerate() {
                let batch = batch?;
                let mult = lr_finder_multiplier(i, start_last, end, batches);
                let lrs: Vec<f64> = start.iter().map(|lr| lr * mult).collect();
                optimiser.set_lrs(&lrs);
                let loss = self.train_step(&mut optimiser, &batch);
                let smooth = smoothed.add(loss);
                bar.inc(1);
                bar.set_message(format!("{smooth:.4}"));
                if !smooth.is_finite() || smooth > best * 4.0 {
                    break;
                }
                if smooth < best && i > 10 {
                    best = smooth;
                }
                points.push(LrPoint {
                    iteration: i,
                    lr: lrs[lrs.len() - 1],
                    loss,
                    smooth_loss: smooth,
                });
            }
            Ok::<(), TrainError>(())
        })();
        bar.finish_and_clear();
        tch::no_grad(|| {
            for (mut var, copy) in saved {
                var.copy_(&copy);
            }
        });
        result?;
        let considered = if points.len() > 11 {
            &points[11..]
        } else {
            &points[..]
        };
        let min_point = considered
            .iter()
            .filter(|p| p.smooth_loss.is_finite())
            .min_by(|a, b| a.smooth_loss.total_cmp(&b.smooth_loss))
            .ok_or(TrainError::NoFiniteLoss)?;
        let min_loss_lr = min_point.lr;
        Ok(LrFindResult {
            min_loss_lr,
            suggested_lr: min_loss_lr / 10.0,
            points,
        })
    }

    /// Prints fastai 0.7's table header (`epoch      trn_loss   val_loss   accuracy`).
    pub fn print_header(&self) {
        if !self.print_table {
            return;
        }
        let mut line = format!("{:<10} {:<10} {:<10} ", "epoch", "trn_loss", "val_loss");
        for name in self.task.metric_names() {
            line.push_str(&format!("{name:<10} "));
        }
        println!("{}", line.trim_end());
    }

    fn print_row(&self, record: &EpochRecord) {
        if !self.print_table {
            return;
        }
        let mut line = format!(
            "{:<10} {:<10.4} {:<10.4} ",
            record.epoch, record.trn_loss, record.val_loss
        );
        for v in &record.metrics {
            line.push_str(&format!("{v:<10.4} "));
        }
        println!("{}", line.trim_end());
    }

    /// fastai 0.7 `fit`: `config.epochs()` epochs under the schedule, a fresh optimiser over the
    /// trainable groups (fastai builds a new optimiser per `fit`), validation and a table
    /// row after each epoch, then `on_epoch_end` (checkpointing). `first_epoch` numbers the
    /// epochs across a run; an epoch's number seeds the loader's shuffle and, with `seed`,
    /// torch's random stream for that epoch. A NaN or infinite training loss
    /// stops with `TrainError::NonFiniteLoss` before the bad step is applied.
    pub fn fit(
        &mut self,
        train: &dyn DataSource,
        valid: &dyn DataSource,
        config: &FitConfig,
        first_epoch: usize,
        resume: Option<FitResume>,
        on_epoch_end: &mut dyn FnMut(EpochEnd<'_>) -> Result<(), TrainError>,
    ) -> Result<Vec<EpochRecord>, TrainError> {
        let base_lrs = self.group_lrs(&config.lrs)?;
        let batches = train.n_batches();
        if batches == 0 {
            return Err(TrainError::NoBatches);
        }
        let schedule = config.schedule(batches);
        let mut optimiser = self.new_optimiser();
        let mut position = FitPosition {
            epochs_done: 0,
            iteration: 0,
            smoothed_avg: 0.0,
            smoothed_batches: 0,
            optimiser_steps: 0,
        };
        if let Some(resume) = resume {
            optimiser.load_state(&resume.optimiser_tensors, resume.position.optimiser_steps)?;
            position = resume.position;
        }
        let mut smoothed =
            SmoothedLoss::from_state(position.smoothed_avg, position.smoothed_batches);
        let mut records = Vec::new();
        self.print_header();
        for epoch_in_fit in position.epochs_done..config.epochs() {
            let epoch = first_epoch + epoch_in_fit;
            let started = Instant::now();
            let bar = self.progress_bar(batches, format!("epoch {epoch}"));
            self.seed_torch_for_epoch(epoch);
            for batch in train.batches(epoch) {
                let batch = batch?;
                let mult = schedule.multiplier(position.iteration);
                let lrs: Vec<f64> = base_lrs.iter().map(|lr| lr * mult).collect();
                optimiser.set_lrs(&lrs);
                let loss = self.train_step(&mut optimiser, &batch);
                if !loss.is_finite() {
                    bar.abandon();
                    return Err(TrainError::NonFiniteLoss {
                        epoch,
                        iteration: position.iteration,
                        loss,
                    });
                }
                let smooth = smoothed.add(loss);
                position.iteration += 1;
                bar.inc(1);
                bar.set_message(format!("{smooth:.4}"));
            }
            bar.finish_and_clear();
            let val = self.validate(valid)?;
            let record = EpochRecord {
                epoch,
                trn_loss: smoothed.value(),
                val_loss: val.loss(),
                metrics: val.values(&self.task),
                seconds: started.elapsed().as_secs_f64(),
            };
            self.print_row(&record);
            position.epochs_done = epoch_in_fit + 1;
            (position.smoothed_avg, position.smoothed_batches) = smoothed.state();
            position.optimiser_steps = optimiser.steps();
            on_epoch_end(EpochEnd {
                record: &record,
                position: &position,
                vs: &self.vs,
                optimiser: &optimiser,
            })?;
            records.push(record);
        }
        Ok(records)
    }

    /// Loss and metrics over `data`, every group in eval mode, no gradients.
    pub fn validate(&self, data: &dyn DataSource) -> Result<MetricSums, TrainError> {
        Ok(self.evaluate(data, false, Tta::NONE)?.1)
    }

    /// Predictions for every image of `data` (eval mode), with the loss and metrics of
    /// the same pass; with `tta`, each image's output is averaged over the views it
    /// names (the lesson's `learn.TTA()`, [`crate::tta`]).
    pub fn predict(
        &self,
        data: &dyn DataSource,
        tta: Tta,
    ) -> Result<(Vec<Prediction>, MetricSums), TrainError> {
        self.evaluate(data, true, tta)
    }

    /// The model's outputs for a batch in eval mode, without gradients.
    fn forward_eval(&self, x: &Tensor) -> Outputs {
        let eval = vec![false; self.n_groups()];
        tch::no_grad(|| self.task.decode(&self.model.forward(x, &eval)))
    }

    /// The model's predictions for a batch in eval mode without gradients, with
    /// `flip` averaged with those on the mirror image mapped back (for the detector,
    /// both passes' detections pooled before NMS).
    pub fn infer(&self, x: &Tensor, flip: bool) -> Outputs {
        if let (true, Some((ssd, _))) = (flip, self.task.detector()) {
            let size = x.size()[3] as usize;
            let (out, mirrored) = (self.forward_eval(x), self.forward_eval(&x.flip([3])));
            if let (Some(output), Some(mirrored)) = (&out.detector, &mirrored.detector) {
                return Outputs {
                    detector: Some(ssd.merge_mirrored(output, mirrored, size)),
                    ..out
                };
            }
        }
        Outputs::average(self.plain_views(x, flip))
    }

    /// The outputs on a batch and, with `flip`, on its mirror image mapped back.
    fn plain_views(&self, x: &Tensor, flip: bool) -> Vec<Outputs> {
        let mut views = vec![self.forward_eval(x)];
        if flip {
            let size = x.size()[3] as usize;
            let mirror = vec![Some(augment::Affine::hflip(size as u32)); x.size()[0] as usize];
            let mirrored = self.forward_eval(&x.flip([3]));
            views.push(
                mirrored
                    .mapped_back(&mirror, size)
                    .expect("the detector's flip pools its passes instead"),
            );
        }
        views
    }

    /// `infer` on a batch of `data`, averaged further over the augmented copies of
    /// its images that `copies` yield (their boxes mapped back through each image's move).
    fn infer_views(
        &self,
        x: &Tensor,
        batch: &Batch,
        flip: bool,
        copies: &mut [Box<dyn Iterator<Item = Result<Batch, TrainError>> + '_>],
    ) -> Result<Outputs, TrainError> {
        if copies.is_empty() {
            return Ok(self.infer(x, flip));
        }
        if self.task.detector().is_some() {
            return Err(TrainError::TtaAugmentedDetector);
        }
        let mut views = self.plain_views(x, flip);
        for (copy, source) in copies.iter_mut().enumerate() {
            let augmented = source
                .next()
                .transpose()?
                .filter(|augmented| augmented.indices == batch.indices)
                .ok_or(TrainError::TtaCopyMisaligned { copy })?;
            let (ax, _) = self.to_device(&augmented);
            views.push(
                self.forward_eval(&ax)
                    .mapped_back(&augmented.moves, augmented.size)?,
            );
        }
        Ok(Outputs::average(views))
    }

    fn evaluate(
        &self,
        data: &dyn DataSource,
        keep: bool,
        tta: Tta,
    ) -> Result<(Vec<Prediction>, MetricSums), TrainError> {
        let mut sums = MetricSums::default();
        let mut predictions = Vec::with_capacity(if keep { data.n_items() } else { 0 });
        let detector = self.task.detector();
        // Copy k is epoch k of the augmented source: its own random draw per image.
        let mut copies: Vec<_> = tta
            .augmented
            .map(|a| (0..a.copies).map(|k| a.source.batches(k)).collect())
            .unwrap_or_default();
        for batch in data.batches(0) {
            let batch = batch?;
            let (x, targets) = self.to_device(&batch);
            let out = self.infer_views(&x, &batch, tta.flip, &mut copies)?;
            let detector_io = match (&detector, &out.detector, &targets.objects) {
                (Some((ssd, nms)), Some(output), Some(objects)) => {
                    Some((ssd, nms, output, objects))
                }
                _ => None,
            };
            // The detector's loss from its parts: one matching of anchors to objects.
            let loss = match detector_io {
                Some((ssd, _, output, objects)) => {
                    let (box_loss, class_loss) = ssd.loss_parts(output, objects);
                    let parts = (box_loss.double_value(&[]), class_loss.double_value(&[]));
                    sums.add_loss_parts(parts.0, parts.1, batch.n);
                    ssd.weighted_loss(parts.0, parts.1)
                }
                None => self.task.loss(&out, &targets, batch.size).double_value(&[]),
            };
            sums.add_loss(loss, batch.n);
            let classes = out
                .class_log_probs
                .as_ref()
                .map(|log_probs| -> Result<_, TrainError> {
                    let (log_prob, class) = log_probs.max_dim(-1, false);
                    let class = Vec::<i64>::try_from(class.to_device(Device::Cpu))?;
                    let prob = Vec::<f32>::try_from(log_prob.exp().to_device(Device::Cpu))?;
                    sums.add_classes(&class, &batch.classes);
                    Ok((class, prob))
                })
                .transpose()?;
            let boxes = out
                .boxes
                .as_ref()
                .map(|boxes| -> Result<_, TrainError> {
                    let boxes = boxes_in_input_pixels(boxes, batch.size)?;
                    sums.add_boxes(&boxes, &batch.boxes, batch.size);
                    Ok(boxes)
                })
                .transpose()?;
            let mut detections = match detector_io {
                Some((ssd, nms, output, objects)) => {
                    let found = ssd.detect(output, nms)?;
                    sums.add_detections(&found, objects, batch.size);
                    found
                }
                None => Vec::new(),
            };
            detections.resize(batch.n, Vec::new());
            if keep {
                for (k, detections) in detections.into_iter().enumerate() {
                    predictions.push(Prediction {
                        index: batch.indices[k],
                        class: classes.as_ref().map(|(c, p)| (c[k] as usize, p[k])),
                        bbox: boxes.as_ref().map(|b| b[k]),
                        detections,
                        orig_size: batch.orig_sizes[k],
                    });
                }
            }
        }
        Ok((predictions, sums))
    }
}

/// Boxes in 224-pixel units (n x 4) as boxes in `size x size` input pixels.
pub(crate) fn boxes_in_input_pixels(
    out: &Tensor,
    size: usize,
) -> Result<Vec<[f32; 4]>, TrainError> {
    let scaled = (out.to_kind(Kind::Float) * (size as f64 / BOX_UNITS))
        .to_device(Device::Cpu)
        .contiguous();
    let flat = Vec::<f32>::try_from(scaled.view(-1))?;
    Ok(flat
        .chunks_exact(4)
        .map(|c| [c[0], c[1], c[2], c[3]])
        .collect())
}
