//! Small files the runner writes (records, specs): through csv-export's
//! `write_atomic` (temp file beside the target, fsync, rename), so a reader
//! never sees half of one.

use anyhow::{Context, Result};
use std::path::Path;

pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    csv_export::write_atomic(path, |out| out.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}
