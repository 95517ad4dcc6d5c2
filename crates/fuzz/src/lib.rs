//! A small, self-contained mutation fuzzer on stable Rust for the project's
//! parsers, run as ordinary tests (`tests/fuzz.rs`, one `#[test]` per target)
//! for `LESSON8_FUZZ_SECS` seconds each. See `crates/fuzz/README.md`.
//!
//! Each test re-runs its own test binary as a **child** that fuzzes one target:
//! first every file of `corpus/<target>/` as it is (the seeds and the kept
//! regression inputs), then mutations of them, deterministic from a seed.
//! Before each input runs, the child writes it to a state file, so whatever
//! ends the child (a panic, an abort on an allocation over the limit, a stack
//! overflow, the per-input watchdog) the parent finds the input that did it,
//! saves it under `target/fuzz-failures/<target>/` and fails the test, printing
//! the seed, the iteration and how to replay it.
//!
//! A target returns the outcomes of an input (`Ok` tags or error messages,
//! which are expected for bad input) or a violation: an error with an empty
//! message or one that does not name the file, or a result that breaks the
//! reader's own contract (e.g. an inverted box from a reader that promises
//! `top <= bottom`). Violations fail the run like a panic.

mod alloc;
pub mod mutate;
pub mod targets;

pub use alloc::LimitedAlloc;
pub use targets::{find_target, TARGETS};

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mutate::Rng;

/// What a target does with one input: `Ok` with one tag per reader it fed
/// (`"ok"` or the normalised error message, used as cheap feedback), or
/// `Err` with a violation, which fails the run.
pub type TargetFn = fn(&mut Scratch, &[u8]) -> Result<Vec<String>, String>;

/// One fuzz target.
pub struct Target {
    /// The name of its `#[test]`, its corpus folder and its failures folder.
    pub name: &'static str,
    /// What it feeds.
    pub about: &'static str,
    pub run: TargetFn,
    /// Tokens of the format, inserted by the mutator.
    pub dictionary: &'static [&'static [u8]],
    /// A format-aware mutation (length fields, dimensions), if any.
    pub structured: Option<fn(&mut Vec<u8>, &mut Rng)>,
    /// Mutated inputs are cut to this length.
    pub max_len: usize,
}

/// A folder the child may write its temp files into (one per child), and the
/// checks that turn an error into a feedback tag or a violation.
pub struct Scratch {
    dir: PathBuf,
}

/// What the running input is doing (the watchdog names it on a hang).
static STEP: std::sync::Mutex<&'static str> = std::sync::Mutex::new("");

impl Scratch {
    /// Names the reader about to run, for the hang report.
    /// Each step has its own time limit (the watchdog's clocks restart here).
    pub fn step(&self, what: &'static str) {
        if let Ok(mut step) = STEP.lock() {
            if std::env::var_os("LESSON8_FUZZ_TRACE").is_some() {
                eprintln!("{:.3} s cpu: {what}", cpu_ms() as f64 / 1000.0);
            }
            *step = what;
        }
        if INPUT_STARTED_MS.load(Ordering::SeqCst) != 0 {
            mark_step_start();
        }
    }

    pub fn new(dir: PathBuf) -> std::io::Result<Scratch> {
        std::fs::create_dir_all(&dir)?;
        Ok(Scratch { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `dir/name`, written with `bytes`.
    pub fn write(&self, name: &str, bytes: &[u8]) -> Result<PathBuf, String> {
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("fuzz harness: {e}"))?;
        }
        std::fs::write(&path, bytes)
            .map_err(|e| format!("fuzz harness: {}: {e}", path.display()))?;
        Ok(path)
    }

    /// An error for bad input, checked: its message must not be empty and must
    /// contain `names` (the file's path: every error of the project names its
    /// file). Returns the message as a feedback tag: temp paths, quoted input and
    /// digits blanked, so that errors of one kind share a tag.
    pub fn refused(
        &self,
        reader: &str,
        error: &dyn std::fmt::Display,
        names: &str,
    ) -> Result<String, String> {
        let message = error.to_string();
        if message.trim().is_empty() {
            return Err(format!("{reader}: an error with an empty message"));
        }
        if !message.contains(names) {
            return Err(format!(
                "{reader}: the error does not name {names}: {message}"
            ));
        }
        Ok(format!("{reader}: {}", self.tag(&message)))
    }

    /// An error whose message need only be non-empty (in-memory parsers without a file).
    pub fn refused_anonymous(
        &self,
        reader: &str,
        error: &dyn std::fmt::Display,
    ) -> Result<String, String> {
        let message = error.to_string();
        if message.trim().is_empty() {
            return Err(format!("{reader}: an error with an empty message"));
        }
        Ok(format!("{reader}: {}", self.tag(&message)))
    }

    /// The kind of an error: its message up to the first quote (where input text
    /// starts), temp paths and runs of digits blanked.
    fn tag(&self, message: &str) -> String {
        let message = message.replace(&*self.dir.to_string_lossy(), "<tmp>");
        let mut tag = String::new();
        for c in message.chars() {
            if matches!(c, '"' | '`' | '\'') || tag.len() >= 80 {
                break;
            }
            if c.is_ascii_digit() {
                if !tag.ends_with('0') {
                    tag.push('0')
                }
            } else {
                tag.push(c)
            }
        }
        tag
    }
}

/// Where the tests keep things; built by `tests/fuzz.rs` from Cargo's paths.
pub struct Layout {
    /// `crates/fuzz/corpus`.
    pub corpus: PathBuf,
    /// `target/fuzz-failures`.
    pub failures: PathBuf,
    /// A folder for the children's temp files (`target/tmp`).
    pub tmp: PathBuf,
}

fn env_f64(name: &str, default: f64) -> f64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Seconds each target fuzzes (default 5; CI sets 60).
pub fn fuzz_secs() -> f64 {
    env_f64("LESSON8_FUZZ_SECS", 5.0).max(0.0)
}

const CHILD_ENV: &str = "LESSON8_FUZZ_CHILD";
const FAILURE_MARK: &str = "LESSON8_FUZZ_FAILURE";
const DONE_MARK: &str = "LESSON8_FUZZ_DONE";

/// The body of each target's `#[test]`: in the test process, runs the child
/// and judges it; in the child, fuzzes.
pub fn fuzz_test(name: &str, layout: &Layout) {
    let target = find_target(name).unwrap_or_else(|| panic!("no fuzz target {name} in TARGETS"));
    if std::env::var(CHILD_ENV).as_deref() == Ok(name) {
        child(target, layout);
        return;
    }
    parent(target, layout);
}

/// Milliseconds (wall, since the child started) at which the running step began; 0: none running.
static INPUT_STARTED_MS: AtomicU64 = AtomicU64::new(0);
/// The process's CPU time in milliseconds when the running step began.
static STEP_CPU_MS: AtomicU64 = AtomicU64::new(0);
static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// CPU time of the whole process (all its threads), in milliseconds: a step that
/// computes too long is a hang however busy the machine is.
fn cpu_ms() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    if unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut t) } != 0 {
        return 0;
    }
    t.tv_sec as u64 * 1000 + t.tv_nsec as u64 / 1_000_000
}

fn wall_ms() -> u64 {
    ORIGIN.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

fn mark_step_start() {
    STEP_CPU_MS.store(cpu_ms(), Ordering::SeqCst);
    INPUT_STARTED_MS.store(wall_ms(), Ordering::SeqCst);
}

fn child(target: &Target, layout: &Layout) {
    let started = Instant::now();
    let secs = fuzz_secs();
    let seed = env_u64("LESSON8_FUZZ_SEED").unwrap_or(0);
    let timeout = env_f64("LESSON8_FUZZ_TIMEOUT_SECS", 5.0);
    let state_path = PathBuf::from(std::env::var_os("LESSON8_FUZZ_STATE").expect("state path"));
    let scratch_dir =
        PathBuf::from(std::env::var_os("LESSON8_FUZZ_SCRATCH").expect("scratch path"));
    let replay = std::env::var_os("LESSON8_FUZZ_REPLAY").map(PathBuf::from);

    // The inputs run unmutated first: the seed corpus and the regression inputs kept
    // beside it, or the one input to replay.
    let corpus: Vec<(String, Vec<u8>)> = match &replay {
        Some(path) => vec![(
            path.display().to_string(),
            std::fs::read(path).expect("replay input"),
        )],
        None => read_corpus(&layout.corpus.join(target.name)),
    };
    assert!(
        !corpus.is_empty(),
        "fuzz target {}: no seed corpus in {}",
        target.name,
        layout.corpus.join(target.name).display()
    );
    let mut scratch = Scratch::new(scratch_dir).expect("scratch folder");
    let state = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .open(&state_path)
        .expect("state file");

    std::panic::set_hook(Box::new(|info| {
        // A panic inside a dependency (crates.io source) unwinds: the project's code
        // must catch it and turn it into an error for that input; if it does not,
        // the input's run ends with the panic and fails all the same.
        if info
            .location()
            .is_some_and(|l| l.file().contains("/.cargo/registry/"))
        {
            eprintln!("note: a dependency panicked (the project must catch it): {info}");
            return;
        }
        let backtrace = std::backtrace::Backtrace::force_capture();
        eprintln!("{FAILURE_MARK} panic: {info}\n{backtrace}");
        std::process::abort();
    }));
    // The watchdog: a step (one reader on one input) may use `timeout` seconds of CPU,
    // and 6 times that of wall time (a deadlock uses no CPU; a busy machine slows all).
    wall_ms();
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(50));
        let began = INPUT_STARTED_MS.load(Ordering::SeqCst);
        if began == 0 {
            continue;
        }
        let wall = wall_ms().saturating_sub(began) as f64 / 1000.0;
        let cpu = cpu_ms().saturating_sub(STEP_CPU_MS.load(Ordering::SeqCst)) as f64 / 1000.0;
        if INPUT_STARTED_MS.load(Ordering::SeqCst) == began
            && (cpu > timeout || wall > 6.0 * timeout)
        {
            let step = STEP.lock().map(|s| *s).unwrap_or("?");
            eprintln!(
                "{FAILURE_MARK} hang: one step of one input ran {cpu:.1} s of CPU, {wall:.1} s of wall time \
                 (limit {timeout} s of CPU, {} s of wall time), in {step}",
                6.0 * timeout
            );
            std::process::abort();
        }
    });
    let mb = 1usize << 20;
    alloc::enable(
        env_u64("LESSON8_FUZZ_MAX_ALLOC_MB").unwrap_or(512) as usize * mb,
        env_u64("LESSON8_FUZZ_MAX_LIVE_MB").unwrap_or(1536) as usize * mb,
    );

    let run = |iteration: u64, input: &[u8], scratch: &mut Scratch| -> Vec<String> {
        // The state file: the iteration, then the input, for the parent to save.
        let mut record = Vec::with_capacity(8 + input.len());
        record.extend_from_slice(&iteration.to_le_bytes());
        record.extend_from_slice(input);
        use std::os::unix::fs::FileExt;
        state.write_all_at(&record, 0).expect("state file");
        state.set_len(record.len() as u64).expect("state file");
        mark_step_start();
        scratch.step("the target");
        let outcome = (target.run)(scratch, input);
        INPUT_STARTED_MS.store(0, Ordering::SeqCst);
        match outcome {
            Ok(tags) => tags,
            Err(violation) => {
                eprintln!("{FAILURE_MARK} violation: {violation}");
                std::process::abort();
            }
        }
    };

    // LESSON8_FUZZ_SHOW_OUTCOMES=1: print each new outcome (to tune the feedback).
    let show_outcomes = std::env::var_os("LESSON8_FUZZ_SHOW_OUTCOMES").is_some();
    let mut seen: HashSet<String> = HashSet::new();
    let mut pool: Vec<Vec<u8>> = Vec::new();
    let (mut runs, mut oks) = (0u64, 0u64);
    for (iteration, (_, input)) in corpus.iter().enumerate() {
        let tags = run(iteration as u64, input, &mut scratch);
        runs += 1;
        oks += tags.iter().any(|t| t.ends_with(": ok")) as u64;
        for tag in tags {
            if tag.starts_with("note:") && !seen.contains(&tag) {
                note(target, layout, seed, iteration as u64, &tag, input);
            }
            seen.insert(tag);
        }
        pool.push(input.clone());
    }
    let seeds = pool.len();
    let deadline = started + Duration::from_secs_f64(if replay.is_some() { 0.0 } else { secs });
    let mut rng = Rng::new(seed);
    const POOL_MAX: usize = 400;
    while Instant::now() < deadline {
        let base = pool[rng.below(pool.len())].clone();
        let input = mutate::mutate(
            &base,
            &pool,
            target.dictionary,
            target.structured,
            target.max_len,
            &mut rng,
        );
        let tags = run(runs, &input, &mut scratch);
        runs += 1;
        oks += tags.iter().any(|t| t.ends_with(": ok")) as u64;
        // Cheap feedback without coverage: an input that reached an outcome not
        // seen before (a new error kind, or a reader accepting it) joins the pool.
        let mut new = false;
        for tag in tags {
            if seen.contains(&tag) {
                continue;
            }
            if tag.starts_with("note:") {
                note(target, layout, seed, runs - 1, &tag, &input);
            }
            if show_outcomes {
                println!("new outcome: {tag}");
            }
            seen.insert(tag);
            new = true;
        }
        if new {
            if pool.len() < POOL_MAX {
                pool.push(input);
            } else if seeds < POOL_MAX {
                let at = seeds + rng.below(POOL_MAX - seeds);
                pool[at] = input;
            }
        }
    }
    println!(
        "{DONE_MARK} target={} seed={seed} runs={runs} corpus={seeds} accepted={oks} outcomes={} pool={} secs={:.1} peak_live_mb={} last_refused={}",
        target.name,
        seen.len(),
        pool.len(),
        started.elapsed().as_secs_f64(),
        alloc::peak_live() >> 20,
        alloc::last_refused()
    );
}

const NOTE_MARK: &str = "LESSON8_FUZZ_NOTE";

/// A finding that does not fail the run (a doubtful acceptance, not a crash):
/// printed once per kind, its input saved beside the failures.
fn note(target: &Target, layout: &Layout, seed: u64, iteration: u64, tag: &str, input: &[u8]) {
    let dir = layout.failures.join(target.name);
    let saved = dir.join(format!("note-seed{seed}-iter{iteration}.bin"));
    let _ = std::fs::create_dir_all(&dir).and_then(|_| std::fs::write(&saved, input));
    println!(
        "{NOTE_MARK} {} (input: {})",
        tag.trim_start_matches("note:").trim(),
        saved.display()
    );
}

/// Corpus files in name order (a `README` or dotfile is not an input).
fn read_corpus(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries.filter_map(|e| e.ok().map(|e| e.path())).collect(),
        Err(_) => return Vec::new(),
    };
    files.retain(|p| {
        p.is_file()
            && p.file_name().is_some_and(|n| {
                let n = n.to_string_lossy();
                !n.starts_with('.') && !n.starts_with("README")
            })
    });
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            (p.display().to_string(), bytes)
        })
        .collect()
}

fn time_seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut s = nanos ^ u64::from(std::process::id()).rotate_left(32);
    mutate::splitmix64(&mut s) % 1_000_000_000
}

struct ChildResult {
    success: bool,
    status: String,
    stdout: String,
    stderr: String,
    killed: bool,
}

fn run_child(
    target: &Target,
    layout: &Layout,
    seed: u64,
    secs: f64,
    state: &Path,
    scratch: &Path,
) -> ChildResult {
    let exe = std::env::current_exe().expect("the test binary's path");
    let mut child = Command::new(exe)
        .args([target.name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, target.name)
        .env("LESSON8_FUZZ_SEED", seed.to_string())
        .env("LESSON8_FUZZ_SECS", secs.to_string())
        .env("LESSON8_FUZZ_STATE", state)
        .env("LESSON8_FUZZ_SCRATCH", scratch)
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start the fuzzing child");
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("piped")));
    let err = drain(Box::new(child.stderr.take().expect("piped")));
    // The watchdog inside the child catches a hanging input; this catches a child
    // that is stuck as a whole (the corpus replay included).
    let limit =
        Duration::from_secs_f64(secs + 120.0 + 10.0 * env_f64("LESSON8_FUZZ_TIMEOUT_SECS", 5.0));
    let begun = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the child") {
            break status;
        }
        if begun.elapsed() > limit {
            let _ = child.kill();
            killed = true;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = layout;
    ChildResult {
        success: status.success() && !killed,
        status: status.to_string(),
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        killed,
    }
}

fn parent(target: &Target, layout: &Layout) {
    let total = fuzz_secs();
    let first_seed = env_u64("LESSON8_FUZZ_SEED").unwrap_or_else(time_seed);
    let keep_going = std::env::var("LESSON8_FUZZ_KEEP_GOING").is_ok_and(|v| v != "0");
    let failures_dir = layout.failures.join(target.name);
    std::fs::create_dir_all(&failures_dir).expect("failures folder");
    let begun = Instant::now();
    let mut failures = Vec::new();
    let mut seed = first_seed;
    loop {
        let left = (total - begun.elapsed().as_secs_f64()).max(0.0);
        let tag = format!("{}-{}", target.name, std::process::id());
        let state = failures_dir.join(format!(".state-{tag}"));
        let scratch = layout.tmp.join(format!("fuzz-{tag}"));
        let result = run_child(target, layout, seed, left, &state, &scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        if result.success && result.stdout.contains(DONE_MARK) {
            let summary = result
                .stdout
                .lines()
                .find_map(|l| l.split_once(DONE_MARK))
                .map_or("", |(_, summary)| summary);
            println!("fuzz {}: {}", target.name, summary.trim());
            if std::env::var_os("LESSON8_FUZZ_SHOW_OUTCOMES").is_some() {
                for line in result
                    .stdout
                    .lines()
                    .filter(|l| l.starts_with("new outcome: "))
                {
                    println!("fuzz {}: {line}", target.name);
                }
            }
            for line in result.stdout.lines().filter(|l| l.starts_with(NOTE_MARK)) {
                println!(
                    "fuzz {}: note: {}",
                    target.name,
                    line.trim_start_matches(NOTE_MARK).trim()
                );
            }
            let _ = std::fs::remove_file(&state);
            break;
        }
        let kind = classify(&result);
        let record = std::fs::read(&state).unwrap_or_default();
        let _ = std::fs::remove_file(&state);
        let (iteration, input) = if record.len() >= 8 {
            let (head, input) = record.split_at(8);
            (
                u64::from_le_bytes(head.try_into().expect("8 bytes")),
                input.to_vec(),
            )
        } else {
            (u64::MAX, Vec::new())
        };
        let saved = failures_dir.join(format!("{}-seed{seed}-iter{iteration}.bin", kind.0));
        std::fs::write(&saved, &input).expect("saving the failing input");
        let tail: String = {
            let lines: Vec<&str> = result.stderr.lines().collect();
            lines[lines.len().saturating_sub(60)..].join("\n")
        };
        let report = format!(
            "fuzz target {} failed: {} (child {}{})\n  seed {seed}, iteration {iteration}, input ({} bytes) saved as {}\n  replay: LESSON8_FUZZ_REPLAY={} cargo test -p fuzz --release --test fuzz {} -- --exact\n  child's stderr (last lines):\n{tail}",
            target.name,
            kind.1,
            result.status,
            if result.killed { ", killed after its time limit" } else { "" },
            input.len(),
            saved.display(),
            saved.display(),
            target.name,
        );
        eprintln!("{report}");
        failures.push(report);
        let left = total - begun.elapsed().as_secs_f64();
        if !keep_going
            || left < 1.0
            || std::env::var_os("LESSON8_FUZZ_REPLAY").is_some()
            || failures.len() >= 20
        {
            break;
        }
        let mut s = seed;
        seed = mutate::splitmix64(&mut s) % 1_000_000_000;
    }
    if !failures.is_empty() {
        panic!(
            "fuzz target {}: {} failure(s), inputs under {} (first: {})",
            target.name,
            failures.len(),
            failures_dir.display(),
            failures[0].lines().next().unwrap_or("")
        );
    }
}

/// A short name (for the saved file) and a description of why the child failed.
fn classify(result: &ChildResult) -> (&'static str, String) {
    let marked = result.stderr.lines().find(|l| l.starts_with(FAILURE_MARK));
    if let Some(line) = marked {
        let what = line.trim_start_matches(FAILURE_MARK).trim().to_string();
        let kind = if what.starts_with("panic") {
            "panic"
        } else if what.starts_with("hang") {
            "hang"
        } else {
            "violation"
        };
        return (kind, what);
    }
    if let Some(line) = result
        .stderr
        .lines()
        .find(|l| l.contains("memory allocation of"))
    {
        return (
            "alloc",
            format!("allocation over the limit: {}", line.trim()),
        );
    }
    if let Some(line) = result
        .stderr
        .lines()
        .find(|l| l.contains("overflowed its stack"))
    {
        return ("stack", format!("stack overflow: {}", line.trim()));
    }
    if result.killed {
        return ("hang", "the child ran past its time limit".into());
    }
    ("crash", format!("the child died ({})", result.status))
}

/// Writes `bytes` to `path` unless a file is there already (corpus generation).
pub fn write_seed(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)
}
