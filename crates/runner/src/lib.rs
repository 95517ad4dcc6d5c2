//! The pipeline runner as a library: [`run`] takes a loaded
//! [`pipeline::Pipeline`] and runs its stale stages in DAG order through the
//! caller's executor (xtask's `stages::execute`).
//! - [`fingerprint`]: what makes a stage stale (its inputs' contents, its
//!   params, its kind's code).
//! - [`run`](mod@run): staging and commit (a stage writes only into its
//!   staging folder; the outputs go into place after it succeeds, its record
//!   last), outcomes and the first failure.
//! - [`peak_memory`]: each stage's peak memory, its child processes' included.
//! - [`out_lock`]: one run per output folder.

pub mod fingerprint;
pub mod out_lock;
pub mod peak_memory;
pub mod run;

pub use fingerprint::CodeSources;
pub use out_lock::OutLock;
pub use run::{
    error_chain, last_seconds, run, states, Execute, Outcome, RunError, RunOptions, StageError,
    StageFailed, State,
};

#[cfg(test)]
mod tests {
    use super::*;
    use pipeline::{Pipeline, StageSpec, StageState, Vars};
    use std::path::PathBuf;

    /// Two stages: `upper` reads the data's text, `count` reads `upper`'s output.
    /// The executor below gives `exec` stages their meaning in process.
    const TWO_STAGES: &str = r#"
[[stage]]
name = "upper"
kind = "exec"
inputs = { text = "{data}/input.txt" }
outputs = { text = "{out}/upper.txt" }
params = { cmd = ["upper"] }

[[stage]]
name = "count"
kind = "exec"
inputs = { text = "{out}/upper.txt" }
outputs = { count = "{out}/count.txt" }
params = { cmd = ["count"] }
"#;

    struct Project {
        dir: tempfile::TempDir,
        /// Every stage the executor was handed, in order.
        executed: Vec<String>,
        /// The stage that fails, if any.
        failing: Option<&'static str>,
    }

    impl Project {
        fn new() -> Project {
            let dir = tempfile::tempdir().unwrap();
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            std::fs::create_dir_all(dir.path().join("src/crates")).unwrap();
            std::fs::write(dir.path().join("data/input.txt"), "hello").unwrap();
            Project {
                dir,
                executed: Vec::new(),
                failing: None,
            }
        }
        fn path(&self, rel: &str) -> PathBuf {
            self.dir.path().join(rel)
        }
        fn pipeline(&self) -> Pipeline {
            let vars = Vars {
                data: self.path("data"),
                out: self.path("out"),
                cache: self.path("cache"),
            };
            Pipeline::parse(TWO_STAGES, &self.path("p.toml"), &vars).unwrap()
        }
        fn options(&self, force: Vec<usize>, only: Option<Vec<usize>>) -> RunOptions {
            RunOptions {
                force,
                only,
                data: self.path("data"),
                out: self.path("out"),
                code: CodeSources {
                    root: self.path("src"),
                    glue: vec![],
                },
            }
        }
        /// Runs the pipeline; what each stage ran is in `executed`.
        fn run(&mut self, force: Vec<usize>, only: Option<Vec<usize>>) -> (Vec<Outcome>, bool) {
            let pipeline = self.pipeline();
            let options = self.options(force, only);
            let failing = self.failing;
            let staging = self.path("out/.state/staging");
            let executed = &mut self.executed;
            let mut execute = |spec: &StageSpec| -> Result<(), StageError> {
                executed.push(spec.name.clone());
                let input = std::fs::read_to_string(spec.input("text")?)?;
                if failing == Some(spec.name.as_str()) {
                    // Half an output, then a failure: none of it may be published.
                    std::fs::write(spec.outputs.values().next().unwrap(), "half")?;
                    return Err("the stage's own error".into());
                }
                match spec.name.as_str() {
                    "upper" => std::fs::write(spec.output("text")?, input.to_uppercase())?,
                    _ => std::fs::write(spec.output("count")?, input.len().to_string())?,
                }
                // The outputs are staged, not in place, while the stage runs.
                assert!(spec.outputs.values().all(|p| p.starts_with(&staging)));
                Ok(())
            };
            let (outcomes, result) = run(&pipeline, &options, &mut execute);
            (outcomes, result.is_ok())
        }
        fn states(&self) -> Vec<State> {
            let options = self.options(vec![], None);
            states(&self.pipeline(), &options.out, &options.code)
        }
    }

    fn results(outcomes: &[Outcome]) -> Vec<StageState> {
        outcomes.iter().map(|o| o.result).collect()
    }

    #[test]
    fn runs_in_order_then_skips_what_is_up_to_date_and_reruns_what_changed() {
        let mut p = Project::new();
        assert_eq!(p.states(), vec![State::NeverRun, State::NeverRun]);
        let (outcomes, ok) = p.run(vec![], None);
        assert!(ok);
        assert_eq!(results(&outcomes), vec![StageState::Ran, StageState::Ran]);
        assert_eq!(
            std::fs::read_to_string(p.path("out/upper.txt")).unwrap(),
            "HELLO"
        );
        assert_eq!(
            std::fs::read_to_string(p.path("out/count.txt")).unwrap(),
            "5"
        );
        assert!(!p.path("out/.state/staging/upper").exists());
        assert_eq!(p.states(), vec![State::UpToDate, State::UpToDate]);
        assert_eq!(
            last_seconds(&p.pipeline(), &p.path("out"))
                .iter()
                .filter(|s| s.is_some())
                .count(),
            2
        );

        let (outcomes, _) = p.run(vec![], None);
        assert_eq!(
            results(&outcomes),
            vec![StageState::Skipped, StageState::Skipped]
        );
        assert_eq!(p.executed, ["upper", "count"]);

        // A changed input reruns its stage, and the one below only because its
        // own input changed.
        std::fs::write(p.path("data/input.txt"), "hello world").unwrap();
        assert_eq!(p.states()[0], State::Stale("input text changed".into()));
        assert_eq!(
            p.states()[1],
            State::Stale("upstream stage #1 is not up to date".into())
        );
        let (outcomes, _) = p.run(vec![], None);
        assert_eq!(results(&outcomes), vec![StageState::Ran, StageState::Ran]);
        assert_eq!(outcomes[0].why, "input text changed");
        assert_eq!(
            std::fs::read_to_string(p.path("out/count.txt")).unwrap(),
            "11"
        );

        // A changed code file makes its kind's stages stale.
        std::fs::write(p.path("src/Cargo.lock"), "v2").unwrap();
        assert_eq!(p.states()[0], State::Stale("code changed".into()));

        // A missing output reruns its stage; a forced stage runs alone with `only`.
        std::fs::remove_file(p.path("out/count.txt")).unwrap();
        p.executed.clear();
        let (outcomes, _) = p.run(vec![1], Some(vec![1]));
        assert_eq!(
            results(&outcomes),
            vec![StageState::NeverRun, StageState::Ran]
        );
        assert_eq!(outcomes[0].why, "not selected");
        assert_eq!(outcomes[1].why, "forced");
        assert_eq!(p.executed, ["count"]);
    }

    #[test]
    fn a_failed_stage_publishes_nothing_keeps_the_old_outputs_and_stops_the_run() {
        let mut p = Project::new();
        assert!(p.run(vec![], None).1);
        std::fs::write(p.path("data/input.txt"), "changed").unwrap();
        p.failing = Some("upper");
        let (outcomes, ok) = p.run(vec![], None);
        assert!(!ok);
        assert_eq!(
            results(&outcomes),
            vec![StageState::Failed, StageState::NeverRun]
        );
        assert_eq!(outcomes[0].why, "the stage's own error");
        assert_eq!(outcomes[1].why, "an earlier stage failed");
        // The old output stays; the half-written one is gone with the staging folder.
        assert_eq!(
            std::fs::read_to_string(p.path("out/upper.txt")).unwrap(),
            "HELLO"
        );
        assert!(!p.path("out/.state/staging/upper").exists());
        // Fixed, the next run does exactly what is unfinished.
        p.failing = None;
        p.executed.clear();
        assert!(p.run(vec![], None).1);
        assert_eq!(p.executed, ["upper", "count"]);
        assert_eq!(
            std::fs::read_to_string(p.path("out/upper.txt")).unwrap(),
            "CHANGED"
        );
    }

    #[test]
    fn the_run_error_names_the_stage_the_pipeline_and_the_cause() {
        let p = Project::new();
        std::fs::remove_file(p.path("data/input.txt")).unwrap();
        let pipeline = p.pipeline();
        let options = p.options(vec![], None);
        let mut never = |_: &StageSpec| -> Result<(), StageError> { panic!("no input, no run") };
        let (outcomes, result) = run(&pipeline, &options, &mut never);
        let line = error_chain(&result.unwrap_err());
        assert!(
            line.starts_with("stage upper of pipeline p failed: stage upper: input text ("),
            "{line}"
        );
        assert!(line.contains("input.txt"), "{line}");
        assert_eq!(outcomes[0].result, StageState::Failed);
    }

    #[test]
    fn a_stage_that_does_not_write_an_output_fails() {
        let p = Project::new();
        let pipeline = p.pipeline();
        let options = p.options(vec![], Some(vec![0]));
        let mut lazy = |_: &StageSpec| -> Result<(), StageError> { Ok(()) };
        let (_, result) = run(&pipeline, &options, &mut lazy);
        let e = result.unwrap_err();
        assert!(matches!(e.source, RunError::MissingOutput { ref name, .. } if name == "text"));
        assert!(!p.path("out/.state/stages/upper.json").exists());
    }
}
