//! Content fingerprints, as DVC's `repro` does it: a stage is up to date when
//! the hash of its inputs' contents, its params and its code equals the one
//! stored after its last success.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use crate::cache::project_root;

/// Remembers file hashes by (length, mtime) so that an unchanged image folder
/// is not read again on every run.
pub struct HashCache {
    file: PathBuf,
    entries: HashMap<PathBuf, CachedHash>,
    dirty: bool,
}

#[derive(Serialize, Deserialize, Clone, PartialEq)]
struct CachedHash {
    len: u64,
    mtime_ns: u128,
    hash: String,
}

impl HashCache {
    pub fn open(file: PathBuf) -> HashCache {
        // A cache that cannot be read is only a cache: start empty.
        let entries = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        HashCache {
            file,
            entries,
            dirty: false,
        }
    }

    pub fn save(&mut self) -> Result<()> {
        if self.dirty {
            let bytes = serde_json::to_vec(&self.entries)?;
            crate::atomic::write(&self.file, &bytes)?;
            self.dirty = false;
        }
        Ok(())
    }

    fn file_hash(&mut self, path: &Path) -> Result<String> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let mtime_ns = meta
            .modified()?
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        if let Some(c) = self.entries.get(path) {
            if c.len == meta.len() && c.mtime_ns == mtime_ns {
                return Ok(c.hash.clone());
            }
        }
        let mut hasher = blake3::Hasher::new();
        hasher
            .update_mmap(path)
            .with_context(|| format!("reading {}", path.display()))?;
        let hash = hasher.finalize().to_hex().to_string();
        self.entries.insert(
            path.to_path_buf(),
            CachedHash {
                len: meta.len(),
                mtime_ns,
                hash: hash.clone(),
            },
        );
        self.dirty = true;
        Ok(hash)
    }

    /// The hash of a file's bytes, or of a folder's relative paths and file contents.
    pub fn path_hash(&mut self, path: &Path) -> Result<String> {
        let meta = std::fs::metadata(path)
            .with_context(|| format!("{} does not exist or cannot be read", path.display()))?;
        if !meta.is_dir() {
            return self.file_hash(path);
        }
        let mut files = Vec::new();
        collect_files(path, &mut files)?;
        files.sort();
        let mut hasher = blake3::Hasher::new();
        for file in files {
            let rel = file.strip_prefix(path).unwrap_or(&file);
            hasher.update(rel.to_string_lossy().as_bytes());
            hasher.update(&[0]);
            hasher.update(self.file_hash(&file)?.as_bytes());
        }
        Ok(hasher.finalize().to_hex().to_string())
    }
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> Result<()> {
    for entry in
        std::fs::read_dir(dir).with_context(|| format!("reading folder {}", dir.display()))?
    {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            collect_files(&path, files)?;
        } else {
            files.push(path);
        }
    }
    Ok(())
}

/// The code a stage kind runs: the sources of the crates it uses, the
/// runner's stage glue and the locked dependency versions.
pub fn code_hash(crates: &[&str]) -> Result<String> {
    let root = project_root();
    let mut hasher = blake3::Hasher::new();
    let mut files = vec![root.join("Cargo.lock"), root.join("xtask/src/stages.rs")];
    for name in crates {
        let dir = root.join("crates").join(name);
        files.push(dir.join("Cargo.toml"));
        collect_files(&dir.join("src"), &mut files)?;
    }
    files.sort();
    for file in files {
        if let Ok(bytes) = std::fs::read(&file) {
            hasher.update(
                file.strip_prefix(&root)
                    .unwrap_or(&file)
                    .to_string_lossy()
                    .as_bytes(),
            );
            hasher.update(&bytes);
        }
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// What the runner stores beside a stage's outputs after it succeeds.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct StageRecord {
    pub fingerprint: String,
    pub seconds: f64,
    pub finished_unix: u64,
}

impl StageRecord {
    pub fn load(path: &Path) -> Option<StageRecord> {
        serde_json::from_slice(&std::fs::read(path).ok()?).ok()
    }
}
