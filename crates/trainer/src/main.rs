//! `trainer`: runs the lesson's training stages (lr_find, train, predict) from a stage
//! spec, and reports what hardware torch sees.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "trainer",
    about = "fast.ai lesson 8 training stages on libtorch"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one stage from its JSON spec (as the pipeline runner writes it).
    Stage {
        #[arg(long)]
        spec: PathBuf,
        /// Continue from the checkpoint in the spec's work_dir if it belongs to this run.
        #[arg(long)]
        resume: bool,
    },
    /// Predict on images (what `cargo xtask predict` runs): writes one JSON line per image.
    Predict {
        /// A model file a train stage wrote.
        #[arg(long)]
        model: PathBuf,
        /// A JSON array of the image paths, in the order the answers are wanted.
        #[arg(long)]
        images: PathBuf,
        /// Where to write the JSON lines (csv_export::ImagePrediction).
        #[arg(long)]
        out: PathBuf,
        /// Classes to report per image.
        #[arg(long, default_value_t = 1)]
        top: usize,
        #[arg(long, default_value_t = 32)]
        batch: usize,
        /// Average over each image and its mirror image.
        #[arg(long)]
        tta: bool,
        /// Torch threads and decoding threads (default: one per core).
        #[arg(long)]
        threads: Option<usize>,
    },
    /// Print the torch device, CUDA availability and thread counts.
    Info,
}

fn main() -> Result<()> {
    let tensor_memory = model_zoo::configure_tensor_memory();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log written to a file or a pipe stays plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::info!("tensor memory: {tensor_memory}");
    match Cli::parse().command {
        Command::Stage { spec, resume } => {
            let text = std::fs::read_to_string(&spec)
                .with_context(|| format!("reading {}", spec.display()))?;
            let spec: pipeline::StageSpec = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a stage spec", spec.display()))?;
            trainer::stage::run(&spec, resume)
        }
        Command::Predict {
            model,
            images,
            out,
            top,
            batch,
            tta,
            threads,
        } => {
            let text = std::fs::read_to_string(&images)
                .with_context(|| format!("reading {}", images.display()))?;
            let files: Vec<PathBuf> = serde_json::from_str(&text)
                .with_context(|| format!("{}: not a JSON array of paths", images.display()))?;
            let threads = threads.unwrap_or_else(trainer::stage::cores);
            let options = trainer::infer::PredictOptions {
                top,
                batch,
                workers: threads,
                tta,
            };
            trainer::infer::run(&model, &files, &options, threads, &out)
        }
        Command::Info => {
            println!("device: {:?}", trainer::stage::device());
            println!("cuda available: {}", tch::Cuda::is_available());
            println!("cuda devices: {}", tch::Cuda::device_count());
            println!("cudnn available: {}", tch::Cuda::cudnn_is_available());
            println!("cores: {}", trainer::stage::cores());
            println!("torch threads: {}", tch::get_num_threads());
            Ok(())
        }
    }
}
