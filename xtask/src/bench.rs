//! `cargo xtask bench ...`: each benchmark beside its Python peer, in one run.

use anyhow::Result;

use crate::cache::project_root;
use crate::flags::BenchCmd;
use crate::{
    bench_annotations, bench_loader, bench_memory, bench_predict, bench_train, predict, pyenv,
    torch,
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
