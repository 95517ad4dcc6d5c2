//! Small files the runner writes (records, specs): through csv-export's
//! `write_atomic` (temp file beside the target, fsync, rename), so a reader
//! never sees half of one.

use anyhow::{Context, Result};
use std::path::Path;

pub fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    csv_export::create_parent(path)?;
    csv_export::write_atomic(path, |out| out.write_all(bytes))
        .with_context(|| format!("writing {}", path.display()))
}
