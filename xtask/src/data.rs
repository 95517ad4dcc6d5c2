//! Where a command's dataset is: `--data`, `data/pascal`, or the synthetic set
//! made on first use; and `cargo xtask data ...`.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

use crate::cache::project_root;
use crate::flags::DataCmd;

impl DataCmd {
    pub fn run(self) -> Result<()> {
        match self {
            DataCmd::Pascal { dir } => {
                let dir = dir.unwrap_or_else(|| project_root().join("data/pascal"));
                crate::download::run(&dir, &crate::download::DownloadSource::official())
            }
            DataCmd::Synthetic { dir, images, seed } => {
                let dir = dir.unwrap_or_else(|| project_root().join("data/synthetic"));
                let config = synthetic_voc::SynthConfig {
                    images,
                    seed,
                    ..Default::default()
                };
                make_synthetic(&dir, &config)
            }
        }
    }
}

/// Where a command's images and annotations come from.
pub struct DataDir {
    pub dir: PathBuf,
    /// True when nothing was given and no VOC copy was found: the synthetic set.
    pub synthetic: bool,
}

/// The dataset dir: --data, else data/pascal when it holds the lesson's JSON,
/// else the synthetic set. Says nothing: commands that only read artifacts
/// (show, show-image) use it as is.
pub fn locate_data(data: &Option<PathBuf>) -> Result<DataDir> {
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

/// What a command does with the dataset it resolves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataUse {
    /// Runs stages on it (`pipeline`, `stage`): the synthetic set is announced loudly.
    Run,
    /// Only shows stages' states (`dag`): no banner, nothing runs on the data.
    Inspect,
}

/// The dataset a pipeline uses: [`locate_data`], and when that is the synthetic
/// set, makes it on first use and, for a run, says so loudly.
pub fn resolve_data(data: &Option<PathBuf>, data_use: DataUse) -> Result<PathBuf> {
    let DataDir { dir, synthetic } = locate_data(data)?;
    if !synthetic {
        return Ok(dir);
    }
    if data_use == DataUse::Run {
        synthetic_banner(&dir);
    }
    if !dir.join("pascal_train2007.json").exists() {
        eprintln!(
            "generating the synthetic dataset ({} images; a few seconds)",
            synthetic_voc::SynthConfig::default().images
        );
        make_synthetic(&dir, &synthetic_voc::SynthConfig::default())?;
    }
    Ok(dir)
}

/// Says loudly that a run uses the synthetic set in `dir`, and how to get VOC.
fn synthetic_banner(dir: &Path) {
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
}

/// Writes the synthetic dataset into `dir` through a temp folder, so a
/// half-written one never sits where the pipelines look.
fn make_synthetic(dir: &Path, config: &synthetic_voc::SynthConfig) -> Result<()> {
    let staged = csv_export::StagedDir::beside(dir)?;
    let made = synthetic_voc::generate(staged.path(), config)?;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("replacing {}", dir.display()))?;
    }
    staged.commit()?;
    eprintln!(
        "synthetic dataset: {} images, {} objects ({} flagged difficult) in {}",
        made.images,
        made.objects,
        made.ignored,
        dir.display()
    );
    Ok(())
}
