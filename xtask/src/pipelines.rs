//! `cargo xtask pipeline`, `stage` and `dag`: a pipeline file loaded, run by
//! the runner crate through [`crate::stages::execute`], and summed up in
//! `report.html`.

use anyhow::{Context, Result};
use std::path::{Path, PathBuf};

use crate::cache::{cache_dir, project_root};
use crate::data::{resolve_data, DataUse};
use crate::flags::{DagCmd, PipelineCmd, StageCmd, Where};
use pipeline::{Pipeline, StageState, Vars};
use runner::{CodeSources, Outcome, RunOptions};

impl PipelineCmd {
    pub fn run(self) -> Result<()> {
        let (pipeline, data, out) = open_pipeline(&self.name, &self.place, DataUse::Run)?;
        let force = if self.force {
            (0..pipeline.stages.len()).collect()
        } else {
            Vec::new()
        };
        run_pipeline(&pipeline, run_options(force, None, data, out))
    }
}

impl StageCmd {
    pub fn run(self) -> Result<()> {
        let (pipeline, data, out) = open_pipeline(&self.pipeline, &self.place, DataUse::Run)?;
        let index = pipeline.index_of(&self.stage)?;
        run_pipeline(
            &pipeline,
            run_options(vec![index], Some(vec![index]), data, out),
        )
    }
}

impl DagCmd {
    pub fn run(self) -> Result<()> {
        let (pipeline, data, out) = open_pipeline(&self.pipeline, &self.place, DataUse::Inspect)?;
        print_dag(&pipeline, &data, &out);
        Ok(())
    }
}

/// Where the stage kinds' code is, for the fingerprints: the workspace's
/// crates, and this crate's glue that runs them.
fn code_sources() -> CodeSources {
    CodeSources {
        root: project_root(),
        glue: vec![PathBuf::from("xtask/src/stages.rs")],
    }
}

fn run_options(
    force: Vec<usize>,
    only: Option<Vec<usize>>,
    data: PathBuf,
    out: PathBuf,
) -> RunOptions {
    RunOptions {
        force,
        only,
        data,
        out,
        code: code_sources(),
    }
}

fn open_pipeline(
    name: &str,
    place: &Where,
    data_use: DataUse,
) -> Result<(Pipeline, PathBuf, PathBuf)> {
    let root = project_root();
    let file = Pipeline::locate(name, &root)?;
    let data = resolve_data(&place.data, data_use)?;
    let data =
        std::fs::canonicalize(&data).with_context(|| format!("dataset dir {}", data.display()))?;
    let out = match &place.out {
        Some(out) => out.clone(),
        None => default_out(&data, &file),
    };
    let out = std::path::absolute(out)?;
    let pipeline = load(&file, &data, &out)?;
    Ok((pipeline, data, out))
}

/// Where a run of pipeline `file` on `dataset` lives unless `--out` says otherwise:
/// `runs/<dataset folder>/<file stem>` under the project root, so that runs of one
/// pipeline on two datasets never share a folder.
pub fn default_out(dataset: &Path, file: &Path) -> PathBuf {
    project_root()
        .join("runs")
        .join(dataset.file_name().unwrap_or_default())
        .join(file.file_stem().unwrap_or_default())
}

/// Pipeline `file` with `{data}` and `{out}` standing for these folders and
/// `{cache}` for the cache.
pub fn load(file: &Path, data: &Path, out: &Path) -> Result<Pipeline> {
    let vars = Vars {
        data: data.to_path_buf(),
        out: out.to_path_buf(),
        cache: cache_dir(),
    };
    Ok(Pipeline::load(file, &vars)?)
}

fn run_pipeline(pipeline: &Pipeline, options: RunOptions) -> Result<()> {
    eprintln!(
        "pipeline {} on {} -> {}",
        pipeline.name,
        options.data.display(),
        options.out.display()
    );
    let _lock = runner::OutLock::acquire(&options.out)?;
    crate::stages::prepare(&pipeline.stages)?;
    pipeline.check_sources_exist()?;
    let mut execute = |spec: &pipeline::StageSpec| crate::stages::execute(spec).map_err(Into::into);
    let (outcomes, result) = runner::run(pipeline, &options, &mut execute);
    let report = options.out.join("report.html");
    match write_report(pipeline, &options, &outcomes, &report) {
        Ok(()) => eprintln!("report: {}", report.display()),
        Err(e) => eprintln!(
            "warning: could not write the report {}: {e:#}",
            report.display()
        ),
    }
    let ran = outcomes
        .iter()
        .filter(|o| o.result == StageState::Ran)
        .count();
    let skipped = outcomes
        .iter()
        .filter(|o| o.result == StageState::Skipped)
        .count();
    if ran == 0 && result.is_ok() {
        eprintln!(
            "pipeline {}: everything up to date, nothing rerun ({skipped} stages skipped)",
            pipeline.name
        );
    } else {
        let names = |r: StageState| -> String {
            let v: Vec<&str> = outcomes
                .iter()
                .filter(|o| o.result == r)
                .map(|o| o.stage.as_str())
                .collect();
            if v.is_empty() {
                "none".into()
            } else {
                v.join(", ")
            }
        };
        eprintln!(
            "pipeline {}: ran {}; skipped {}",
            pipeline.name,
            names(StageState::Ran),
            names(StageState::Skipped)
        );
    }
    Ok(result?)
}

/// The outputs shown as tables in report.html, by name: the training stages'
/// per-epoch `metrics` and the evaluate stage's per-class `ap` (other CSVs, such as
/// the lr_find curve or the predictions, are long and have their pictures).
const REPORT_TABLES: &[&str] = &["metrics", "ap"];

/// One page for the whole run: the DAG with what each stage did, the
/// metrics tables and every picture the pipeline's stages make.
fn write_report(
    pipeline: &Pipeline,
    options: &RunOptions,
    outcomes: &[Outcome],
    out: &Path,
) -> Result<()> {
    use viz::report::{ReportFile, RunReport, StageReport};
    let last = runner::last_seconds(pipeline, &options.out);
    let stages = pipeline
        .stages
        .iter()
        .zip(outcomes)
        .zip(last)
        .map(|((stage, outcome), last)| {
            let seconds = match outcome.result {
                StageState::Ran | StageState::Failed => Some(outcome.seconds),
                StageState::Skipped => last,
                StageState::NeverRun => None,
            };
            StageReport {
                name: stage.name.clone(),
                kind: stage.kind.to_string(),
                depends_on: stage
                    .upstream
                    .iter()
                    .map(|&u| pipeline.stages[u].name.clone())
                    .collect(),
                state: outcome.result,
                seconds,
                message: Some(outcome.why.clone()).filter(|m| !m.is_empty()),
                peak_memory_bytes: outcome.peak_memory_bytes,
            }
        })
        .collect();
    let outputs = || {
        pipeline
            .stages
            .iter()
            .flat_map(|s| s.outputs.iter().map(move |(name, path)| (s, name, path)))
    };
    let title = |stage: &pipeline::Stage, path: &Path| {
        format!(
            "{}: {}",
            stage.name,
            path.strip_prefix(&options.out).unwrap_or(path).display()
        )
    };
    let report = RunReport {
        pipeline: pipeline.name.clone(),
        data_dir: options.data.clone(),
        stages,
        tables: outputs()
            .filter(|(_, name, _)| REPORT_TABLES.contains(&name.as_str()))
            .map(|(s, _, p)| ReportFile::new(title(s, p), p))
            .collect(),
        pictures: outputs()
            .filter(|(_, _, p)| p.extension().is_some_and(|e| e == "png"))
            .map(|(s, _, p)| ReportFile::new(title(s, p), p))
            .collect(),
    };
    viz::report::write_report(&report, out)?;
    Ok(())
}

fn print_dag(pipeline: &Pipeline, data: &Path, out: &Path) {
    println!("pipeline {} ({})", pipeline.name, pipeline.file.display());
    if !pipeline.description.is_empty() {
        println!("  {}", pipeline.description);
    }
    println!("  data: {}\n  out:  {}", data.display(), out.display());
    let states = runner::states(pipeline, out, &code_sources());
    let seconds = runner::last_seconds(pipeline, out);
    for (i, stage) in pipeline.stages.iter().enumerate() {
        let after: Vec<&str> = stage
            .upstream
            .iter()
            .map(|&u| pipeline.stages[u].name.as_str())
            .collect();
        let time = seconds[i]
            .map(|s| format!(", last run {s:.1}s"))
            .unwrap_or_default();
        println!(
            "{:>3}. {} [{}]  {}{}",
            i + 1,
            stage.name,
            stage.kind,
            states[i],
            time
        );
        if !after.is_empty() {
            println!("       after: {}", after.join(", "));
        }
        for path in stage.outputs.values() {
            println!(
                "       -> {}",
                path.strip_prefix(out).unwrap_or(path).display()
            );
        }
    }
}
