//! Learning-rate schedules with fastai 0.7's semantics (`fastai/sgdr.py`).
//!
//! fastai 0.7 computes the rate statefully: `on_train_begin` asks the schedule for
//! the rate of batch 0, and every `on_batch_end` asks again for the next batch. The
//! functions here are the same rates in closed form, as a function of the batch index
//! `i` within one `fit` call (fastai resets the counter at each `fit`), so a resumed
//! run only needs `i` to land on exactly the same rate.
//!
//! Every schedule returns a *multiplier* of the fit's base rates; with differential
//! rates each layer group's rate is `base_lr[g] * multiplier`, as fastai multiplies
//! its `init_lrs` array.

/// What drives the multiplier across one `fit` call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Schedule {
    /// `fit(lr, n)` without `cycle_len`: the base rates throughout.
    Constant,
    /// fastai 0.7 `CosAnneal` (SGDR): cosine from 1 to 0 over each cycle, restarting at
    /// each cycle's start; a cycle lasts `first_cycle_batches`, then each next one
    /// `cycle_mult` times the one before. Batches with a global index below
    /// `cycle_batches / 20` (the current cycle's length, as fastai tests `self.nb/20`)
    /// run at 1/100 of the rate: a warm-up that in practice hits only the first cycle.
    CosAnneal {
        first_cycle_batches: usize,
        cycle_mult: usize,
    },
    /// fastai 0.7 `CircularLR` (`use_clr=(div, cut_div)`): a triangle per cycle that
    /// rises linearly from `lr/div` to `lr` over the first `cycle_batches / cut_div`
    /// batches (integer division, as fastai's `//`), then falls linearly back towards
    /// `lr/div`. Cycles do not grow (fastai passes no `cycle_mult` to it).
    Circular {
        cycle_batches: usize,
        div: f64,
        cut_div: usize,
    },
}

impl Schedule {
    /// The multiplier for batch `i` (0-based) of the fit.
    pub fn multiplier(&self, i: usize) -> f64 {
        match *self {
            Schedule::Constant => 1.0,
            Schedule::CosAnneal {
                first_cycle_batches,
                cycle_mult,
            } => {
                let (cycle_iter, cycle_batches) =
                    cycle_position(i, first_cycle_batches, cycle_mult);
                if (i as f64) < cycle_batches as f64 / 20.0 {
                    return 0.01;
                }
                ((std::f64::consts::PI * cycle_iter as f64 / cycle_batches as f64).cos() + 1.0)
                    / 2.0
            }
            Schedule::Circular {
                cycle_batches,
                div,
                cut_div,
            } => {
                let cycle_batches = cycle_batches.max(1);
                let cycle_iter = i % cycle_batches;
                // fastai divides by zero when a cycle is shorter than cut_div; a one-batch
                // rise is the nearest sensible reading.
                let cut_point = (cycle_batches / cut_div.max(1)).max(1);
                let pct = if cycle_iter > cut_point {
                    1.0 - (cycle_iter - cut_point) as f64 / (cycle_batches - cut_point) as f64
                } else {
                    cycle_iter as f64 / cut_point as f64
                };
                (1.0 + pct * (div - 1.0)) / div
            }
        }
    }
}

/// Position of batch `i` inside geometric cycles: (index within its cycle, that cycle's length).
fn cycle_position(i: usize, first_cycle_batches: usize, cycle_mult: usize) -> (usize, usize) {
    let mut start = 0usize;
    let mut len = first_cycle_batches.max(1);
    while i >= start + len {
        start += len;
        len *= cycle_mult.max(1);
    }
    (i - start, len)
}

/// Number of epochs a fastai 0.7 `fit(lrs, n_cycle, cycle_len, cycle_mult)` runs:
/// `sum_geom(cycle_len or 1, cycle_mult, n_cycle)`, whatever the schedule.
pub fn fit_epochs(cycles: usize, cycle_len: Option<usize>, cycle_mult: usize) -> usize {
    let base = cycle_len.unwrap_or(1);
    (0..cycles)
        .map(|c| base * cycle_mult.max(1).pow(c as u32))
        .sum()
}

/// fastai 0.7 `LR_Finder` (exponential): the rate of batch `i` is
/// `start * (end / start_last) ^ (i / batches)`, where `start_last` is the last layer
/// group's start rate (fastai's `layer_opt.lr`), reaching `end` after one epoch.
pub fn lr_finder_multiplier(i: usize, start_last: f64, end: f64, batches: usize) -> f64 {
    (end / start_last).powf(i as f64 / batches.max(1) as f64)
}

/// fastai 0.7's smoothed training loss: an exponential moving average with
/// `avg_mom = 0.98`, divided by `1 - 0.98^n` so the first batches are not biased to 0.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SmoothedLoss {
    avg: f64,
    batches: u32,
}

impl SmoothedLoss {
    pub const BETA: f64 = 0.98;

    /// Adds one batch's loss and returns the bias-corrected average.
    pub fn add(&mut self, loss: f64) -> f64 {
        self.batches += 1;
        self.avg = self.avg * Self::BETA + loss * (1.0 - Self::BETA);
        self.value()
    }

    pub fn value(&self) -> f64 {
        if self.batches == 0 {
            return f64::NAN;
        }
        self.avg / (1.0 - Self::BETA.powi(self.batches as i32))
    }

    /// The raw state, for checkpoints: (average, batch count).
    pub fn state(&self) -> (f64, u32) {
        (self.avg, self.batches)
    }

    pub fn from_state(avg: f64, batches: u32) -> Self {
        SmoothedLoss { avg, batches }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f64::consts::PI;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12 * b.abs().max(1.0)
    }

    #[test]
    fn cos_anneal_matches_hand_computed_rates() {
        // 100 batches per cycle, cycle_mult 2: cycles of 100, 200, 400 batches.
        let s = Schedule::CosAnneal {
            first_cycle_batches: 100,
            cycle_mult: 2,
        };
        let cases = [
            (0, 0.01),                                   // warm-up: i < 100/20 = 5
            (4, 0.01),                                   // last warm-up batch
            (5, ((PI * 5.0 / 100.0).cos() + 1.0) / 2.0), // cosine resumes where it would be
            (50, 0.5),                                   // half way: cos(pi/2) = 0
            (99, ((PI * 99.0 / 100.0).cos() + 1.0) / 2.0),
            (100, 1.0), // restart, no warm-up (100 >= 200/20)
            (200, 0.5), // half of the 200-batch cycle
            (299, ((PI * 199.0 / 200.0).cos() + 1.0) / 2.0),
            (300, 1.0), // third cycle starts
            (500, 0.5),
        ];
        for (i, want) in cases {
            assert!(
                close(s.multiplier(i), want),
                "batch {i}: {} != {want}",
                s.multiplier(i)
            );
        }
    }

    #[test]
    fn cos_anneal_matches_a_replay_of_fastai_stateful_code() {
        // fastai 0.7 CosAnneal.calc_lr, transcribed statement by statement.
        let (mut nb, cycle_mult) = (37usize, 3usize);
        let mut cycle_iter = 0usize;
        let s = Schedule::CosAnneal {
            first_cycle_batches: 37,
            cycle_mult: 3,
        };
        for iteration in 0..37 + 111 + 50 {
            let want = if (iteration as f64) < nb as f64 / 20.0 {
                cycle_iter += 1;
                0.01
            } else {
                let cos_out = (PI * cycle_iter as f64 / nb as f64).cos() + 1.0;
                cycle_iter += 1;
                if cycle_iter == nb {
                    cycle_iter = 0;
                    nb *= cycle_mult;
                }
                cos_out / 2.0
            };
            assert!(close(s.multiplier(iteration), want), "batch {iteration}");
        }
    }

    #[test]
    fn circular_lr_matches_hand_computed_rates() {
        // use_clr = (20, 8) over 80 batches: cut point 10.
        let s = Schedule::Circular {
            cycle_batches: 80,
            div: 20.0,
            cut_div: 8,
        };
        let cases = [
            (0, 1.0 / 20.0),
            (5, (1.0 + 0.5 * 19.0) / 20.0),
            (10, 1.0),
            (45, (1.0 + 0.5 * 19.0) / 20.0), // 1 - 35/70 = 0.5
            (79, (1.0 + (1.0 - 69.0 / 70.0) * 19.0) / 20.0),
            (80, 1.0 / 20.0), // next cycle
            (90, 1.0),
        ];
        for (i, want) in cases {
            assert!(
                close(s.multiplier(i), want),
                "batch {i}: {} != {want}",
                s.multiplier(i)
            );
        }
    }

    #[test]
    fn constant_is_one() {
        assert_eq!(Schedule::Constant.multiplier(12345), 1.0);
    }

    #[test]
    fn epochs_follow_fastai_sum_geom() {
        assert_eq!(fit_epochs(1, Some(1), 1), 1);
        assert_eq!(fit_epochs(3, Some(1), 2), 7); // 1 + 2 + 4
        assert_eq!(fit_epochs(2, Some(2), 2), 6); // 2 + 4
        assert_eq!(fit_epochs(4, None, 1), 4);
    }

    #[test]
    fn lr_finder_spans_start_to_end_in_one_epoch() {
        let (start, end, nb) = (1e-5, 10.0, 200);
        assert!(close(start * lr_finder_multiplier(0, start, end, nb), 1e-5));
        assert!(close(
            start * lr_finder_multiplier(100, start, end, nb),
            1e-5 * 1e3
        ));
        assert!(close(
            start * lr_finder_multiplier(200, start, end, nb),
            10.0
        ));
    }

    #[test]
    fn smoothed_loss_is_bias_corrected() {
        let mut s = SmoothedLoss::default();
        assert!(close(s.add(2.0), 2.0)); // the first value comes back unbiased
                                         // (0.98*0.04 + 0.02*4) / (1 - 0.98^2)
        let want = (0.98 * 0.04 + 0.02 * 4.0) / (1.0 - 0.98f64.powi(2));
        assert!(close(s.add(4.0), want));
    }
}
