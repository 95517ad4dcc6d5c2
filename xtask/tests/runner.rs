//! The runner end to end, with `exec` stages (shell commands) so that each
//! case controls exactly what a stage reads, writes and how it fails.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

struct Project {
    dir: tempfile::TempDir,
}

impl Project {
    fn new(pipeline: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/input.txt"), "hello\n").unwrap();
        std::fs::write(dir.path().join("p.toml"), pipeline).unwrap();
        Project { dir }
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
        cmd.args(args)
            .arg(self.path("p.toml"))
            .arg("--data")
            .arg(self.path("data"))
            .arg("--out")
            .arg(self.path("out"));
        cmd
    }
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }
    fn read(&self, rel: &str) -> String {
        std::fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const TWO_STAGES: &str = r#"
[[stage]]
name = "upper"
kind = "exec"
inputs = { text = "{data}/input.txt" }
outputs = { text = "{out}/upper.txt" }
params = { cmd = ["sh", "-c", "tr a-z A-Z < $IN_TEXT > $OUT_TEXT"] }

[[stage]]
name = "count"
kind = "exec"
inputs = { text = "{out}/upper.txt" }
outputs = { count = "{out}/count.txt" }
params = { cmd = ["sh", "-c", "wc -c < $IN_TEXT > $OUT_COUNT"], env = { NOTE = "v1" } }
"#;

#[test]
fn reruns_only_what_changed() {
    let p = Project::new(TWO_STAGES);
    let first = p.run(&["pipeline"]);
    assert!(first.status.success(), "{}", stderr(&first));
    assert_eq!(p.read("out/upper.txt"), "HELLO\n");
    assert_eq!(p.read("out/count.txt").trim(), "6");
    assert!(
        stderr(&first).contains("ran upper, count"),
        "{}",
        stderr(&first)
    );

    let second = p.run(&["pipeline"]);
    assert!(second.status.success());
    assert!(
        stderr(&second).contains("nothing rerun"),
        "{}",
        stderr(&second)
    );

    // A param of the second stage: only it reruns.
    std::fs::write(p.path("p.toml"), TWO_STAGES.replace("\"v1\"", "\"v2\"")).unwrap();
    let third = p.run(&["pipeline"]);
    assert!(
        stderr(&third).contains("[count] running (params changed)"),
        "{}",
        stderr(&third)
    );
    assert!(
        stderr(&third).contains("[upper] up to date"),
        "{}",
        stderr(&third)
    );

    // The first stage's input: both rerun.
    std::fs::write(p.path("data/input.txt"), "hello world\n").unwrap();
    let dag = p.run(&["dag"]);
    let dag_text = String::from_utf8_lossy(&dag.stdout);
    assert!(
        dag_text.contains("stale (input text changed)"),
        "{dag_text}"
    );
    assert!(
        dag_text.contains("upstream stage #1 is not up to date"),
        "{dag_text}"
    );
    let fourth = p.run(&["pipeline"]);
    assert!(
        stderr(&fourth).contains("ran upper, count"),
        "{}",
        stderr(&fourth)
    );
    assert_eq!(p.read("out/count.txt").trim(), "12");

    // A deleted output: that stage reruns.
    std::fs::remove_file(p.path("out/count.txt")).unwrap();
    let fifth = p.run(&["pipeline"]);
    assert!(
        stderr(&fifth).contains("[count] running (an output is missing)"),
        "{}",
        stderr(&fifth)
    );

    // `stage` reruns one stage, up to date or not, and nothing else.
    let one = p.command(&["stage"]).output().unwrap();
    assert!(!one.status.success(), "stage needs a stage name");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    let one = cmd
        .args(["stage"])
        .arg(p.path("p.toml"))
        .arg("upper")
        .arg("--data")
        .arg(p.path("data"))
        .arg("--out")
        .arg(p.path("out"))
        .output()
        .unwrap();
    assert!(
        stderr(&one).contains("[upper] running (forced)") && stderr(&one).contains("ran upper;"),
        "{}",
        stderr(&one)
    );
}

#[test]
fn a_failed_stage_leaves_earlier_outputs_intact() {
    let p = Project::new(TWO_STAGES);
    assert!(p.run(&["pipeline"]).status.success());
    let failing = TWO_STAGES.replace(
        "wc -c < $IN_TEXT > $OUT_COUNT",
        "echo partial > $OUT_COUNT; exit 3",
    );
    std::fs::write(p.path("p.toml"), failing).unwrap();
    let out = p.run(&["pipeline"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("stage count of pipeline p failed"),
        "{}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("exited with exit status: 3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        p.read("out/count.txt").trim(),
        "6",
        "the old output is kept"
    );
    assert!(
        !p.path("out/.state/staging/count").exists(),
        "staging is cleaned up"
    );
}

#[test]
fn a_stage_that_forgets_an_output_fails() {
    let p = Project::new(&TWO_STAGES.replace("wc -c < $IN_TEXT > $OUT_COUNT", "true"));
    let out = p.run(&["pipeline"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("did not write its output count"),
        "{}",
        stderr(&out)
    );
    assert!(!p.path("out/count.txt").exists());
}

#[test]
fn missing_input_is_named() {
    let p = Project::new(TWO_STAGES);
    std::fs::remove_file(p.path("data/input.txt")).unwrap();
    let out = p.run(&["pipeline"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("input text") && stderr(&out).contains("input.txt"),
        "{}",
        stderr(&out)
    );
}

fn wait_for(path: &Path, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if path.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn kill_in_the_middle_of_a_stage_leaves_no_partial_output_and_resumes() {
    let slow = TWO_STAGES.replace(
        "wc -c < $IN_TEXT > $OUT_COUNT",
        "echo partial > $OUT_COUNT; touch $OUT_COUNT.started; sleep 30; wc -c < $IN_TEXT > $OUT_COUNT",
    );
    let p = Project::new(&slow);
    let mut child = p
        .command(&["pipeline"])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = p.path("out/.state/staging/count/count.txt.started");
    assert!(
        wait_for(&started, Duration::from_secs(60)),
        "the slow stage never started"
    );
    // kill -9 the runner; its shell child is orphaned and killed too.
    Command::new("kill")
        .args(["-9", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
    Command::new("pkill")
        .args(["-9", "-f", "sleep 30"])
        .status()
        .ok();
    assert!(
        !p.path("out/count.txt").exists(),
        "no partial output in place"
    );
    assert_eq!(
        p.read("out/upper.txt"),
        "HELLO\n",
        "the finished stage's output is kept"
    );

    std::fs::write(p.path("p.toml"), TWO_STAGES).unwrap();
    let resumed = p.run(&["pipeline"]);
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    assert!(
        stderr(&resumed).contains("[upper] up to date"),
        "{}",
        stderr(&resumed)
    );
    assert_eq!(p.read("out/count.txt").trim(), "6");
}

#[test]
fn a_second_run_on_the_same_output_folder_waits_for_the_first() {
    let slow = TWO_STAGES.replace(
        "wc -c < $IN_TEXT > $OUT_COUNT",
        "touch $OUT_COUNT.started; sleep 3; wc -c < $IN_TEXT > $OUT_COUNT",
    );
    let p = Project::new(&slow);
    let quiet = |args: &[&str]| {
        p.command(args)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let first = quiet(&["pipeline"]);
    let started = p.path("out/.state/staging/count/count.txt.started");
    assert!(
        wait_for(&started, Duration::from_secs(60)),
        "the slow stage never started"
    );
    let second = p.run(&["pipeline"]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success());
    assert!(second.status.success(), "{}", stderr(&second));
    let said = stderr(&second);
    assert!(
        said.contains("another run (pid ") && said.contains("waiting for it to finish"),
        "{said}"
    );
    // It ran after the first had finished: everything was up to date by then.
    assert!(said.contains("everything up to date"), "{said}");
    assert_eq!(p.read("out/count.txt").trim(), "6");

    // The lock of a killed run does not stay behind.
    let mut killed = quiet(&["pipeline", "--force"]);
    std::fs::remove_file(&started).ok();
    assert!(wait_for(&started, Duration::from_secs(60)));
    killed.kill().unwrap();
    killed.wait().unwrap();
    let after = p.run(&["pipeline"]);
    assert!(after.status.success(), "{}", stderr(&after));
    assert!(!stderr(&after).contains("waiting"), "{}", stderr(&after));
}

/// Runs `script` as root of its own user and mount namespace (where it may mount a
/// small tmpfs), or None where this machine does not allow that.
fn in_mount_namespace(script: &str) -> Option<Output> {
    let probe = Command::new("unshare")
        .args(["-rm", "true"])
        .output()
        .ok()?;
    if !probe.status.success() {
        eprintln!(
            "skipped: `unshare -rm` is not allowed here ({})",
            String::from_utf8_lossy(&probe.stderr).trim()
        );
        return None;
    }
    Some(
        Command::new("unshare")
            .args(["-rm", "sh", "-c", script])
            .env("XTASK", env!("CARGO_BIN_EXE_xtask"))
            .output()
            .unwrap(),
    )
}

#[test]
fn a_full_or_read_only_output_folder_is_named_and_earlier_outputs_stay() {
    let big = TWO_STAGES.replace(
        "wc -c < $IN_TEXT > $OUT_COUNT",
        "head -c 2000000 /dev/zero > $OUT_COUNT",
    );
    let p = Project::new(&big);
    let out = p.path("out");
    std::fs::create_dir_all(&out).unwrap();
    let run = format!(
        "\"$XTASK\" pipeline {} --data {} --out {}",
        p.path("p.toml").display(),
        p.path("data").display(),
        out.display()
    );
    // A 512 KiB tmpfs: the first stage fits, the second's 2 MB do not. Then the same
    // folder read-only.
    let script = format!(
        "set -u; mount -t tmpfs -o size=512k tmpfs {out} || exit 99
         {run} 2>&1; echo \"== full rc=$?\"; echo \"== upper: $(cat {out}/upper.txt)\"
         ls {out}/count.txt 2>/dev/null && echo '== count.txt exists'
         mount -o remount,ro {out}
         {run} --force 2>&1; echo \"== read-only rc=$?\"; echo \"== upper: $(cat {out}/upper.txt)\"",
        out = out.display()
    );
    let Some(output) = in_mount_namespace(&script) else {
        return;
    };
    let said = String::from_utf8_lossy(&output.stdout).into_owned();
    if said.is_empty() && output.status.code() == Some(99) {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let (full, read_only) = said.split_once("== full rc=").expect("both runs ran");
    assert!(
        read_only.starts_with('1'),
        "the full run must fail:\n{said}"
    );
    assert!(
        full.contains(&format!("the output folder {} has only", out.display()))
            && full.contains("is the disk full?"),
        "{said}"
    );
    assert!(
        !said.contains("count.txt exists"),
        "no partial output:\n{said}"
    );
    assert!(
        read_only.contains("== read-only rc=1"),
        "the read-only run must fail:\n{said}"
    );
    assert!(
        read_only.contains(&out.display().to_string())
            && read_only.contains("Read-only file system"),
        "{said}"
    );
    assert_eq!(
        said.matches("== upper: HELLO").count(),
        2,
        "the first stage's output survives both:\n{said}"
    );
}

#[test]
fn unreadable_images_are_counted_in_the_summary_line_and_the_report() {
    let p = Project::new(
        r#"
[[stage]]
name = "look"
kind = "draw"
inputs = { csv = "{data}/lrg.csv", images = "{data}/images" }
outputs = { png = "{out}/look.png" }
"#,
    );
    std::fs::create_dir_all(p.path("data/images")).unwrap();
    std::fs::write(p.path("data/images/bad.jpg"), b"not a jpeg").unwrap();
    std::fs::write(p.path("data/lrg.csv"), "fn,cat\nbad.jpg,dog\n").unwrap();
    let out = p.run(&["pipeline"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("[look] ran in") && stderr(&out).contains("; 1 unreadable images"),
        "{}",
        stderr(&out)
    );
    let report = p.read("out/report.html");
    assert!(
        report.contains("1 unreadable images drawn as marked tiles"),
        "the report's note column says it"
    );
}
