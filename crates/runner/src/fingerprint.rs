//! Content fingerprints, as DVC's `repro` does it: a stage is up to date when
//! the hash of its inputs' contents, its params and its code equals the one
//! stored after its last success.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use pipeline::StageKind;

/// The parts of a stage's fingerprint, kept in its record so the runner can
/// say what changed.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Fingerprint {
    pub kind: StageKind,
    pub params: String,
    pub code: String,
    pub inputs: BTreeMap<String, String>,
}

impl Fingerprint {
    pub fn digest(&self) -> String {
        blake3::hash(&serde_json::to_vec(self).expect("a fingerprint serialises"))
            .to_hex()
            .to_string()
    }

    /// What differs from an earlier fingerprint, in words.
    pub fn changes_since(&self, old: &Fingerprint) -> String {
        let mut what = Vec::new();
        if self.params != old.params || self.kind != old.kind {
            what.push("params changed".to_string());
        }
        if self.code != old.code {
            what.push("code changed".to_string());
        }
        for (name, hash) in &self.inputs {
            if old.inputs.get(name) != Some(hash) {
                what.push(format!("input {name} changed"));
            }
        }
        if what.is_empty() {
            "inputs changed".into()
        } else {
            what.join(", ")
        }
    }
}

/// Where the code of the stage kinds lives: a stage's code hash covers the
/// sources of the crates its kind names ([`StageKind::code`]) under
/// `<root>/crates/`, the `glue` files (the caller's code that runs the kinds)
/// and `Cargo.lock`.
#[derive(Debug, Clone)]
pub struct CodeSources {
    pub root: PathBuf,
    pub glue: Vec<PathBuf>,
}

impl CodeSources {
    /// The hash of the code `kind` runs.
    pub fn hash(&self, kind: StageKind) -> io::Result<String> {
        let mut files = vec![self.root.join("Cargo.lock")];
        files.extend(self.glue.iter().map(|f| self.root.join(f)));
        for name in kind.code() {
            let dir = self.root.join("crates").join(name);
            files.push(dir.join("Cargo.toml"));
            collect_files(&dir.join("src"), &mut files)?;
        }
        files.sort();
        let mut hasher = blake3::Hasher::new();
        for file in files {
            // A file that is not there (a checkout without Cargo.lock) hashes as absent.
            if let Ok(bytes) = std::fs::read(&file) {
                let rel = file.strip_prefix(&self.root).unwrap_or(&file);
                hasher.update(rel.to_string_lossy().as_bytes());
                hasher.update(&bytes);
            }
        }
        Ok(hasher.finalize().to_hex().to_string())
    }
}

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

    pub fn save(&mut self) -> io::Result<()> {
        if self.dirty {
            let bytes = serde_json::to_vec(&self.entries)?;
            csv_export::write_bytes_atomic(&self.file, &bytes)?;
            self.dirty = false;
        }
        Ok(())
    }

    fn file_hash(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path).map_err(|e| naming(path, e))?;
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
        hasher.update_mmap(path).map_err(|e| naming(path, e))?;
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
    pub fn path_hash(&mut self, path: &Path) -> io::Result<String> {
        let meta = std::fs::metadata(path).map_err(|e| naming(path, e))?;
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

/// An I/O error that names its file (the kind is kept).
fn naming(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn collect_files(dir: &Path, files: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir).map_err(|e| naming(dir, e))? {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_folder_hash_follows_contents_and_names_and_the_cache_remembers() {
        let dir = tempfile::tempdir().unwrap();
        let images = dir.path().join("images");
        std::fs::create_dir_all(images.join("sub")).unwrap();
        std::fs::write(images.join("a.jpg"), "a").unwrap();
        std::fs::write(images.join("sub/b.jpg"), "b").unwrap();
        let cache_file = dir.path().join("cache.json");
        let mut cache = HashCache::open(cache_file.clone());
        let first = cache.path_hash(&images).unwrap();
        cache.save().unwrap();
        assert!(cache_file.exists());
        // Reopened: the same hash, from the cache.
        let mut cache = HashCache::open(cache_file);
        assert_eq!(cache.path_hash(&images).unwrap(), first);
        assert!(!cache.dirty);
        // A renamed file changes the folder's hash; so does a changed byte.
        std::fs::rename(images.join("a.jpg"), images.join("c.jpg")).unwrap();
        let renamed = cache.path_hash(&images).unwrap();
        assert_ne!(renamed, first);
        std::fs::write(images.join("sub/b.jpg"), "B!").unwrap();
        assert_ne!(cache.path_hash(&images).unwrap(), renamed);
        // A missing path is an error that names it.
        let missing = dir.path().join("nope.csv");
        let e = cache.path_hash(&missing).unwrap_err();
        assert!(e.to_string().contains("nope.csv"), "{e}");
    }

    #[test]
    fn changes_are_said_in_words() {
        let old = Fingerprint {
            kind: StageKind::Draw,
            params: "{}".into(),
            code: "c1".into(),
            inputs: [("csv".to_string(), "h1".to_string())].into(),
        };
        let mut now = old.clone();
        assert_eq!(now.digest(), old.digest());
        now.code = "c2".into();
        now.inputs.insert("csv".into(), "h2".into());
        assert_ne!(now.digest(), old.digest());
        assert_eq!(now.changes_since(&old), "code changed, input csv changed");
    }
}
