//! Resuming an interrupted train stage. A test binary of its own: torch's random
//! generator and thread count are process-wide, and the tests of one binary run
//! concurrently, so another stage test would reseed the generator or change the thread
//! count in the middle of these runs.

mod common;

use common::jpegs::{read_csv, tiny, Fixture};
use trainer::stage::{run, run_observed};
use trainer::{checkpoint, TrainError};

/// A run stopped after any epoch and resumed by a fresh run gives the epoch table and the
/// model of an uninterrupted run, bit for bit, with everything that carries over from one
/// epoch to the next in play: dropout (the classifier head) and drop-connect (Lite0's
/// blocks) drawing from torch's random stream, augmentation, Adam's moments, BatchNorm
/// statistics, the schedule's position and the smoothed loss.
#[test]
fn a_run_interrupted_after_any_epoch_resumes_bit_for_bit() {
    let fx = Fixture::new(60);
    let mut params = tiny(
        "classify",
        serde_json::json!([
            { "freeze_to": -1 },
            { "fit": { "lr": 1e-3, "cycles": 1 } },
            { "freeze_to": -2 },
            { "fit": { "lrs": [1e-4, 1e-3, 1e-2], "cycles": 2, "cycle_len": 1, "cycle_mult": 2 } },
        ]),
    );
    params["backbone"] = "efficientnet-lite0".into();
    params["augment"] = serde_json::json!({});
    // One torch thread: several times faster than two on a busy 2-core machine. (Results
    // depend on the thread count, so both runs must use the same.)
    params["threads"] = 1.into();
    let spec_in = |dir: &str| {
        let mut spec = fx.csv_spec(
            "train",
            "lrg.csv",
            &[&format!("{dir}/m.safetensors"), &format!("{dir}/m.csv")],
            params.clone(),
        );
        spec.work_dir = fx.path(&format!("work/{dir}"));
        spec
    };

    run(&spec_in("straight"), false).unwrap();

    // Stopped after 1 epoch (between the fits), 2 (between the second fit's cycles) and 3
    // (in the middle of its two-epoch cycle), each time resumed by a fresh run.
    let interrupted = spec_in("interrupted");
    for stop_after in [1, 2, 3] {
        let err = run_observed(&interrupted, stop_after > 1, &mut |epochs_done| {
            if epochs_done == stop_after {
                return Err(TrainError::Stopped { epochs_done });
            }
            Ok(())
        })
        .unwrap_err();
        assert!(
            format!("{err:#}")
                .contains(&format!("stopped by the caller after {stop_after} epochs")),
            "{err:#}"
        );
    }
    run(&interrupted, true).unwrap();

    // The epoch tables without their `seconds` column.
    let table = |dir: &str| {
        let (header, mut rows) = read_csv(&fx.path(&format!("{dir}/m.csv")));
        assert_eq!(header.last().map(String::as_str), Some("seconds"));
        for row in &mut rows {
            row.pop();
        }
        rows
    };
    let straight_table = table("straight");
    assert_eq!(straight_table.len(), 4);
    assert_eq!(table("interrupted"), straight_table);

    let (straight, _) = checkpoint::load(&fx.path("straight/m.safetensors")).unwrap();
    let (resumed, _) = checkpoint::load(&fx.path("interrupted/m.safetensors")).unwrap();
    let mut names: Vec<&String> = straight.keys().collect();
    names.sort();
    assert_eq!(names.len(), resumed.len());
    let differing: Vec<&String> = names
        .into_iter()
        .filter(|name| {
            !resumed
                .get(*name)
                .is_some_and(|t| t.equal(&straight[*name]))
        })
        .collect();
    assert!(differing.is_empty(), "tensors differ: {differing:?}");
}
