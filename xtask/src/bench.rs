//! `cargo xtask bench ...`: each benchmark beside its Python peer, in one run.

use anyhow::{Context, Result};
use pipeline::params::TrainParams;
use pipeline::{Pipeline, StageKind};

use crate::cache::project_root;
use crate::flags::BenchCmd;
use crate::{
    bench_annotations, bench_loader, bench_memory, bench_predict, bench_train, pipelines, predict,
    pyenv, torch,
};

impl BenchCmd {
    pub fn run(self) -> Result<()> {
        let python = pyenv::peer_python()?;
        match self {
            BenchCmd::Annotations => bench_annotations::run(&python),
            BenchCmd::Loader(args) => bench_loader::run(&python, &args),
            BenchCmd::Train => {
                let bench = torch::bench_step_binary(&torch::ensure_libtorch()?)?;
                bench_train::run(&python, &bench)
            }
            BenchCmd::Ssd => {
                let libtorch = torch::ensure_libtorch()?;
                let rust = torch::release_example(&libtorch, "trainer", "bench_ssd_step")?;
                bench_train::run_step_bench(&bench_train::StepBench {
                    model: "SSD (Lite0 body, 189 anchors, focal loss)",
                    rust: &rust,
                    python: &python,
                    peer_args: vec![
                        project_root().join("scripts/bench/peer_ssd_step.py").into(),
                        bench_train::peer_script("ref_lesson.py")?
                            .parent()
                            .expect("a script has a folder")
                            .into(),
                    ],
                    size: Some(ssd_pipeline_size()?),
                })
            }
            BenchCmd::Memory => {
                let bench = torch::bench_step_binary(&torch::ensure_libtorch()?)?;
                bench_memory::run(&python, &bench)
            }
            BenchCmd::Predict { model } => {
                let model = match model {
                    Some(model) => model,
                    None => predict::default_model(None, None)?,
                };
                let trainer = torch::trainer_binary(&torch::ensure_libtorch()?)?;
                bench_predict::run(&python, &trainer, &model)
            }
        }
    }
}

/// The input side `pipelines/ssd.toml` trains at, so that `bench ssd` times the
/// default's step rather than the lesson's 224 px.
fn ssd_pipeline_size() -> Result<u32> {
    let root = project_root();
    let file = Pipeline::locate("ssd", &root)?;
    // No dataset is read: the folders only fill the file's placeholders.
    let runs = root.join("runs");
    let pipeline = pipelines::load(&file, &runs, &runs)?;
    let train = pipeline
        .stages
        .iter()
        .find(|s| s.kind == StageKind::Train)
        .with_context(|| format!("{}: no train stage", file.display()))?;
    let params: TrainParams = serde_json::from_value(train.params.clone())
        .with_context(|| format!("{}: stage {}: params", file.display(), train.name))?;
    Ok(params.size)
}
