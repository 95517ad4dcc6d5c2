//! Where the project keeps things that outlive one clone: libtorch, the
//! Python peers, imported weights. Shared by every clone on the machine.

use std::path::PathBuf;

/// `$LESSON8_CACHE`, else `$XDG_CACHE_HOME/lesson8`, else `~/.cache/lesson8`.
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("LESSON8_CACHE") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("lesson8");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("lesson8")
}

/// The repository root (xtask lives one level below it).
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}
