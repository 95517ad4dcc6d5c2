//! Runs a pipeline's stages in DAG order, skipping those whose fingerprint is
//! unchanged since their last success. A stage writes into a staging folder;
//! its outputs are renamed into place only after it succeeds, and its record
//! (fingerprint) is written last, so a killed stage leaves no half-written
//! output and simply runs again next time.

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::fingerprint::{code_hash, HashCache, StageRecord};
use crate::stages;
use pipeline::{Pipeline, Stage, StageKind, StageSpec};
use viz::report::StageState;

/// Where a run keeps its own bookkeeping, inside the output dir.
pub struct StateDir {
    root: PathBuf,
}

impl StateDir {
    pub fn new(out: &Path) -> StateDir {
        StateDir {
            root: out.join(".state"),
        }
    }
    fn record(&self, stage: &str) -> PathBuf {
        self.root.join("stages").join(format!("{stage}.json"))
    }
    fn staging(&self, stage: &str) -> PathBuf {
        self.root.join("staging").join(stage)
    }
    fn work(&self, stage: &str) -> PathBuf {
        self.root.join("work").join(stage)
    }
    fn hash_cache(&self) -> HashCache {
        HashCache::open(self.root.join("hash-cache.json"))
    }
}

/// The parts of a fingerprint, kept so the runner can say what changed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub kind: StageKind,
    pub params: String,
    pub code: String,
    pub inputs: BTreeMap<String, String>,
}

impl Fingerprint {
    fn digest(&self) -> String {
        blake3::hash(&serde_json::to_vec(self).expect("serialisable"))
            .to_hex()
            .to_string()
    }

    /// What differs from an earlier fingerprint, in words.
    fn changes_since(&self, old: &Fingerprint) -> String {
        let mut what = Vec::new();
        if self.params != old.params || self.kind != old.kind {
            what.push("params changed".to_string());
        }
        if self.code != old.code {
            what.push("code changed".to_string());
        }
        for (name, hash) in &self.inputs {
            if old.inputs.get(name) != Some(hash) {
                what.push(format!("input {name} changed"));
            }
        }
        if what.is_empty() {
            "inputs changed".into()
        } else {
            what.join(", ")
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Record {
    #[serde(flatten)]
    summary: StageRecord,
    parts: Fingerprint,
}

/// A stage's state before running.
#[derive(Debug, Clone, PartialEq)]
pub enum State {
    UpToDate,
    Stale(String),
    NeverRun,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            State::UpToDate => write!(f, "up to date"),
            State::Stale(why) => write!(f, "stale ({why})"),
            State::NeverRun => write!(f, "never run"),
        }
    }
}

/// What happened to a stage in one run.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub stage: String,
    /// `NeverRun`: not run this time (not selected, or an earlier stage failed).
    pub result: StageState,
    pub why: String,
    pub seconds: f64,
    /// Peak resident memory of the stage's run (see `peak_memory`), bytes.
    pub peak_memory_bytes: Option<u64>,
}

fn fingerprint(stage: &Stage, hashes: &mut HashCache) -> Result<Fingerprint> {
    let mut inputs = BTreeMap::new();
    for (name, path) in &stage.inputs {
        let hash = hashes.path_hash(path).with_context(|| {
            format!(
                "stage {}: input {name} ({}) is missing or unreadable",
                stage.name,
                path.display()
            )
        })?;
        inputs.insert(name.clone(), hash);
    }
    Ok(Fingerprint {
        kind: stage.kind,
        params: serde_json::to_string(&stage.params)?,
        code: code_hash(stage.kind.code())?,
        inputs,
    })
}

fn load_record(state: &StateDir, stage: &Stage) -> Option<Record> {
    serde_json::from_slice(&std::fs::read(state.record(&stage.name)).ok()?).ok()
}

/// The state of one stage given the states of those before it.
fn state_of(stage: &Stage, earlier: &[State], state: &StateDir, hashes: &mut HashCache) -> State {
    let Some(record) = load_record(state, stage) else {
        return State::NeverRun;
    };
    if let Some(&u) = stage
        .upstream
        .iter()
        .find(|&&u| earlier[u] != State::UpToDate)
    {
        return State::Stale(format!("upstream stage #{} is not up to date", u + 1));
    }
    if let Some((name, path)) = stage.outputs.iter().find(|(_, p)| !p.exists()) {
        return State::Stale(format!("output {name} ({}) is missing", path.display()));
    }
    match fingerprint(stage, hashes) {
        Err(e) => State::Stale(format!("{e:#}")),
        Ok(now) if now.digest() == record.summary.fingerprint => State::UpToDate,
        Ok(now) => State::Stale(now.changes_since(&record.parts)),
    }
}

/// Every stage's state, in pipeline order (for `cargo xtask dag`).
pub fn states(pipeline: &Pipeline, out: &Path) -> Vec<State> {
    let state = StateDir::new(out);
    let mut hashes = state.hash_cache();
    let mut states = Vec::new();
    for stage in &pipeline.stages {
        let s = state_of(stage, &states, &state, &mut hashes);
        states.push(s);
    }
    let _ = hashes.save();
    states
}

pub struct RunOptions {
    /// Run these stages even when up to date.
    pub force: Vec<usize>,
    /// Only consider these stages (None: all).
    pub only: Option<Vec<usize>>,
    pub data: PathBuf,
    pub out: PathBuf,
}

/// Runs what is stale. Returns each stage's outcome; the error of a failed
/// stage is returned after the outcomes are known, so a report can be written.
pub fn run(pipeline: &Pipeline, options: &RunOptions) -> (Vec<Outcome>, Result<()>) {
    let state = StateDir::new(&options.out);
    let mut hashes = state.hash_cache();
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut failure = Ok(());
    for (index, stage) in pipeline.stages.iter().enumerate() {
        let mut outcome = Outcome {
            stage: stage.name.clone(),
            result: StageState::NeverRun,
            why: String::new(),
            seconds: 0.0,
            peak_memory_bytes: None,
        };
        if failure.is_err() {
            outcome.why = "an earlier stage failed".into();
            outcomes.push(outcome);
            continue;
        }
        if options
            .only
            .as_ref()
            .is_some_and(|only| !only.contains(&index))
        {
            outcome.why = "not selected".into();
            outcomes.push(outcome);
            continue;
        }
        let meter = crate::peak_memory::StageMeter::start();
        let result = run_stage(
            stage,
            options.force.contains(&index),
            &state,
            &mut hashes,
            options,
        );
        match result {
            Ok(Some(Ran { seconds, why, note })) => {
                outcome.result = StageState::Ran;
                // The stage's own note (e.g. unreadable images) goes beside why it ran.
                outcome.why = match &note {
                    Some(note) => format!("{why}; {note}"),
                    None => why,
                };
                outcome.seconds = seconds;
                outcome.peak_memory_bytes = meter.peak_bytes();
                let memory = outcome
                    .peak_memory_bytes
                    .map(|b| format!(", peak memory {}", viz::report::format_bytes(b)))
                    .unwrap_or_default();
                let note = note.map(|n| format!("; {n}")).unwrap_or_default();
                eprintln!("[{}] ran in {:.1}s{memory}{note}", stage.name, seconds);
            }
            Ok(None) => {
                outcome.result = StageState::Skipped;
                outcome.why = "up to date".into();
                eprintln!("[{}] up to date, skipped", stage.name);
            }
            Err(e) => {
                outcome.result = StageState::Failed;
                outcome.peak_memory_bytes = meter.peak_bytes();
                outcome.why = format!("{e:#}");
                eprintln!("[{}] FAILED: {e:#}", stage.name);
                failure = Err(e.context(format!(
                    "stage {} of pipeline {} failed",
                    stage.name, pipeline.name
                )));
            }
        }
        outcomes.push(outcome);
    }
    let _ = hashes.save();
    (outcomes, failure)
}

/// A stage that ran: how long, why, and the line it left for the summary.
struct Ran {
    seconds: f64,
    why: String,
    note: Option<String>,
}

/// Runs one stage if stale (or forced): `Some` when it ran.
fn run_stage(
    stage: &Stage,
    force: bool,
    state: &StateDir,
    hashes: &mut HashCache,
    options: &RunOptions,
) -> Result<Option<Ran>> {
    let now = fingerprint(stage, hashes)?;
    let digest = now.digest();
    let record = load_record(state, stage);
    let outputs_exist = stage.outputs.values().all(|p| p.exists());
    let why = match &record {
        _ if force => "forced".to_string(),
        None => "never run".to_string(),
        Some(_) if !outputs_exist => "an output is missing".to_string(),
        Some(r) if r.summary.fingerprint != digest => now.changes_since(&r.parts),
        Some(_) => return Ok(None),
    };
    eprintln!("[{}] running ({why})", stage.name);

    let staging = state.staging(&stage.name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("clearing {}", staging.display()))?;
    }
    create_dir(&staging)?;
    let work_dir = state.work(&stage.name);
    create_dir(&work_dir)?;
    let staged: BTreeMap<String, PathBuf> = stage
        .outputs
        .iter()
        .map(|(name, final_path)| {
            let rel = final_path
                .strip_prefix(&options.out)
                .expect("outputs are checked to lie under {out}");
            (name.clone(), staging.join(rel))
        })
        .collect();
    for path in staged.values() {
        if let Some(parent) = path.parent() {
            create_dir(parent)?;
        }
    }
    let spec = StageSpec {
        name: stage.name.clone(),
        kind: stage.kind,
        inputs: stage.inputs.clone(),
        outputs: staged.clone(),
        params: stage.params.clone(),
        work_dir,
        data_dir: options.data.clone(),
        fingerprint: digest.clone(),
    };
    let note_file = spec.work_dir.join(pipeline::NOTE_FILE);
    let _ = std::fs::remove_file(&note_file);
    let started = Instant::now();
    let result = stages::execute(&spec);
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        // A full disk shows up as some tool's write error; say which folder is full
        // (measured before the staged files are cleared away).
        let full = disk_nearly_full(&options.out);
        let _ = std::fs::remove_dir_all(&staging);
        return Err(match full {
            Some(free) => e.context(format!(
                "the output folder {} has only {free} bytes free: is the disk full?",
                options.out.display()
            )),
            None => e,
        });
    }
    for (name, path) in &staged {
        if !path.exists() {
            let _ = std::fs::remove_dir_all(&staging);
            bail!(
                "stage {} finished but did not write its output {name} ({})",
                stage.name,
                stage.outputs[name].display()
            );
        }
    }
    // Publish: the record goes first out of the way, then outputs, then the new record.
    let record_path = state.record(&stage.name);
    let _ = std::fs::remove_file(&record_path);
    for (name, from) in &staged {
        let to = &stage.outputs[name];
        if let Some(parent) = to.parent() {
            create_dir(parent)?;
        }
        if to.is_dir() {
            std::fs::remove_dir_all(to)
                .with_context(|| format!("replacing the folder {}", to.display()))?;
        }
        std::fs::rename(from, to).with_context(|| format!("moving {} into place", to.display()))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    let finished_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let record = Record {
        summary: StageRecord {
            fingerprint: digest,
            seconds,
            finished_unix,
        },
        parts: now,
    };
    crate::atomic::write(&record_path, &serde_json::to_vec_pretty(&record)?)?;
    let note = std::fs::read_to_string(&note_file)
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    Ok(Some(Ran { seconds, why, note }))
}

/// The last successful run's time of each stage, if any.
pub fn last_seconds(pipeline: &Pipeline, out: &Path) -> Vec<Option<f64>> {
    let state = StateDir::new(out);
    pipeline
        .stages
        .iter()
        .map(|s| StageRecord::load(&state.record(&s.name)).map(|r| r.seconds))
        .collect()
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating the folder {}", dir.display()))
}

/// The free bytes of the file system holding `dir`, when under 1 MiB.
fn disk_nearly_full(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct it is given; the path is NUL-terminated.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    let free = stat.f_bavail as u64 * stat.f_frsize as u64;
    (free < 1 << 20).then_some(free)
}
