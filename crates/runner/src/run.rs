//! Runs a pipeline's stages in DAG order, skipping those whose fingerprint is
//! unchanged since their last success. A stage writes into a staging folder;
//! its outputs are renamed into place only after it succeeds, and its record
//! (fingerprint) is written last, so a killed stage leaves no half-written
//! output and simply runs again next time.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::error::Error;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::fingerprint::{CodeSources, Fingerprint, HashCache};
use crate::peak_memory::StageMeter;
use pipeline::{format_bytes, Pipeline, Stage, StageSpec, StageState};

/// Why a stage's code failed, as its executor says it.
pub type StageError = Box<dyn Error + Send + Sync>;

/// What runs a stage: fills the spec's (staging) outputs, or fails. The
/// caller's, since what a kind does is not the runner's business (xtask's
/// `stages::execute`; a test's closure).
pub type Execute<'a> = dyn FnMut(&StageSpec) -> Result<(), StageError> + 'a;

/// Why one stage did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("stage {stage}: input {name} ({}) is missing or unreadable", path.display())]
    Input {
        stage: String,
        name: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stage {stage}: reading the code of its kind")]
    Code {
        stage: String,
        #[source]
        source: io::Error,
    },
    #[error("{doing} {}", path.display())]
    Io {
        doing: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("stage {stage} finished but did not write its output {name} ({})", path.display())]
    MissingOutput {
        stage: String,
        name: String,
        path: PathBuf,
    },
    /// A full disk shows up as some tool's write error; this says which folder is full.
    #[error("the output folder {} has only {free} bytes free: is the disk full?", out.display())]
    DiskFull {
        out: PathBuf,
        free: u64,
        #[source]
        source: StageError,
    },
    #[error(transparent)]
    Stage(StageError),
}

/// The error a run stops with: the first stage that failed.
#[derive(Debug, thiserror::Error)]
#[error("stage {stage} of pipeline {pipeline} failed")]
pub struct StageFailed {
    pub stage: String,
    pub pipeline: String,
    #[source]
    pub source: RunError,
}

/// An error and its sources on one line, `outer: inner: innermost`.
pub fn error_chain(error: &(dyn Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        line.push_str(": ");
        line.push_str(&e.to_string());
        source = e.source();
    }
    line
}

/// Where a run keeps its own bookkeeping, inside the output dir.
struct StateDir {
    root: PathBuf,
}

impl StateDir {
    fn new(out: &Path) -> StateDir {
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

/// What the runner stores beside a stage's outputs after it succeeds.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Record {
    fingerprint: String,
    seconds: f64,
    finished_unix: u64,
    parts: Fingerprint,
}

impl Record {
    fn load(state: &StateDir, stage: &str) -> Option<Record> {
        serde_json::from_slice(&std::fs::read(state.record(stage)).ok()?).ok()
    }
}

/// A stage's state before running (`cargo xtask dag`).
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
    pub result: StageState,
    pub why: String,
    pub seconds: f64,
    /// Peak resident memory of the stage's run (see [`crate::peak_memory`]), bytes.
    pub peak_memory_bytes: Option<u64>,
}

pub struct RunOptions {
    /// Run these stages even when up to date.
    pub force: Vec<usize>,
    /// Only consider these stages (None: all).
    pub only: Option<Vec<usize>>,
    pub data: PathBuf,
    pub out: PathBuf,
    pub code: CodeSources,
}

fn fingerprint(
    stage: &Stage,
    code: &CodeSources,
    hashes: &mut HashCache,
) -> Result<Fingerprint, RunError> {
    let mut inputs = BTreeMap::new();
    for (name, path) in &stage.inputs {
        let hash = hashes.path_hash(path).map_err(|source| RunError::Input {
            stage: stage.name.clone(),
            name: name.clone(),
            path: path.clone(),
            source,
        })?;
        inputs.insert(name.clone(), hash);
    }
    Ok(Fingerprint {
        kind: stage.kind,
        params: serde_json::to_string(&stage.params).expect("params are JSON values"),
        code: code.hash(stage.kind).map_err(|source| RunError::Code {
            stage: stage.name.clone(),
            source,
        })?,
        inputs,
    })
}

/// The state of one stage given the states of those before it.
fn state_of(
    stage: &Stage,
    earlier: &[State],
    state: &StateDir,
    code: &CodeSources,
    hashes: &mut HashCache,
) -> State {
    let Some(record) = Record::load(state, &stage.name) else {
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
    match fingerprint(stage, code, hashes) {
        Err(e) => State::Stale(error_chain(&e)),
        Ok(now) if now.digest() == record.fingerprint => State::UpToDate,
        Ok(now) => State::Stale(now.changes_since(&record.parts)),
    }
}

/// Every stage's state, in pipeline order.
pub fn states(pipeline: &Pipeline, out: &Path, code: &CodeSources) -> Vec<State> {
    let state = StateDir::new(out);
    let mut hashes = state.hash_cache();
    let mut states = Vec::new();
    for stage in &pipeline.stages {
        let s = state_of(stage, &states, &state, code, &mut hashes);
        states.push(s);
    }
    // Only a cache: a run that cannot save it hashes again next time.
    let _ = hashes.save();
    states
}

/// The last successful run's time of each stage, if any.
pub fn last_seconds(pipeline: &Pipeline, out: &Path) -> Vec<Option<f64>> {
    let state = StateDir::new(out);
    pipeline
        .stages
        .iter()
        .map(|s| Record::load(&state, &s.name).map(|r| r.seconds))
        .collect()
}

/// Runs what is stale, each stage through `execute`. Returns each stage's
/// outcome, and the first failure after the outcomes are known, so that a
/// report can be written either way. Says what it does on stderr, a line per
/// stage.
pub fn run(
    pipeline: &Pipeline,
    options: &RunOptions,
    execute: &mut Execute,
) -> (Vec<Outcome>, Result<(), StageFailed>) {
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
        let meter = StageMeter::start();
        let force = options.force.contains(&index);
        match run_stage(stage, force, &state, &mut hashes, options, execute) {
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
                    .map(|b| format!(", peak memory {}", format_bytes(b)))
                    .unwrap_or_default();
                let note = note.map(|n| format!("; {n}")).unwrap_or_default();
                eprintln!("[{}] ran in {seconds:.1}s{memory}{note}", stage.name);
            }
            Ok(None) => {
                outcome.result = StageState::Skipped;
                outcome.why = "up to date".into();
                eprintln!("[{}] up to date, skipped", stage.name);
            }
            Err(e) => {
                outcome.result = StageState::Failed;
                outcome.peak_memory_bytes = meter.peak_bytes();
                outcome.why = error_chain(&e);
                eprintln!("[{}] FAILED: {}", stage.name, outcome.why);
                failure = Err(StageFailed {
                    stage: stage.name.clone(),
                    pipeline: pipeline.name.clone(),
                    source: e,
                });
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
    execute: &mut Execute,
) -> Result<Option<Ran>, RunError> {
    let now = fingerprint(stage, &options.code, hashes)?;
    let digest = now.digest();
    let record = Record::load(state, &stage.name);
    let outputs_exist = stage.outputs.values().all(|p| p.exists());
    let why = match &record {
        _ if force => "forced".to_string(),
        None => "never run".to_string(),
        Some(_) if !outputs_exist => "an output is missing".to_string(),
        Some(r) if r.fingerprint != digest => now.changes_since(&r.parts),
        Some(_) => return Ok(None),
    };
    eprintln!("[{}] running ({why})", stage.name);

    let staging = state.staging(&stage.name);
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io_error("clearing", &staging))?;
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
    let result = execute(&spec);
    let seconds = started.elapsed().as_secs_f64();
    if let Err(e) = result {
        // Measured before the staged files are cleared away.
        let full = disk_nearly_full(&options.out);
        let _ = std::fs::remove_dir_all(&staging);
        return Err(match full {
            Some(free) => RunError::DiskFull {
                out: options.out.clone(),
                free,
                source: e,
            },
            None => RunError::Stage(e),
        });
    }
    if let Some((name, _)) = staged.iter().find(|(_, path)| !path.exists()) {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(RunError::MissingOutput {
            stage: stage.name.clone(),
            name: name.clone(),
            path: stage.outputs[name].clone(),
        });
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
            std::fs::remove_dir_all(to).map_err(io_error("replacing the folder", to))?;
        }
        std::fs::rename(from, to).map_err(io_error("moving into place", to))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    let finished_unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let record = Record {
        fingerprint: digest,
        seconds,
        finished_unix,
        parts: now,
    };
    let json = serde_json::to_vec_pretty(&record).expect("a record serialises");
    csv_export::write_bytes_atomic(&record_path, &json)
        .map_err(io_error("writing", &record_path))?;
    let note = std::fs::read_to_string(&note_file)
        .ok()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty());
    Ok(Some(Ran { seconds, why, note }))
}

fn io_error(doing: &'static str, path: &Path) -> impl FnOnce(io::Error) -> RunError {
    let path = path.to_path_buf();
    move |source| RunError::Io {
        doing,
        path,
        source,
    }
}

fn create_dir(dir: &Path) -> Result<(), RunError> {
    std::fs::create_dir_all(dir).map_err(io_error("creating the folder", dir))
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
