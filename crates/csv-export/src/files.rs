//! The project's safe writes, used by every crate that writes a file or a
//! folder another step reads:
//!
//! * [`write_atomic`] / [`write_bytes_atomic`]: a file, through a temp file
//!   beside it (fsync, rename), its folder made on demand;
//! * [`StagedDir`]: a folder (or one file or folder inside it) filled beside
//!   its destination and renamed into place in one step, or removed.
//!
//! Either way a reader sees the old content or the new, never half of it, and
//! a writer that fails or is killed leaves nothing where readers look.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

/// Creates the folder `path` goes in, if it has one; the error names the folder.
pub fn create_parent(path: &Path) -> io::Result<()> {
    match path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", dir.display()))),
        None => Ok(()),
    }
}

/// Writes `path` atomically: its folder is created if missing, then `write`
/// fills a buffered temp file beside it, which is flushed, fsynced and renamed
/// over `path` (then the folder is fsynced). If `write` fails, or the process
/// dies, `path` keeps its old content; on failure the temp file is removed.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> io::Result<()> {
    let in_context = |e: io::Error, doing: &str| {
        io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
    };
    create_parent(path).map_err(|e| in_context(e, "writing"))?;
    let dir = folder_of(path);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    // Files get the usual `0666 & !umask` rather than a temp file's `0600`.
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666));
    let temp = builder
        .tempfile_in(dir)
        .map_err(|e| in_context(e, "creating a temp file for"))?;
    let mut out = BufWriter::with_capacity(1 << 16, temp);
    write(&mut out).map_err(|e| in_context(e, "writing"))?;
    let temp = out
        .into_inner()
        .map_err(|e| in_context(e.into_error(), "writing"))?;
    temp.as_file()
        .sync_all()
        .map_err(|e| in_context(e, "syncing"))?;
    temp.persist(path)
        .map_err(|e| in_context(e.error, "renaming into"))?;
    sync_dir(dir);
    Ok(())
}

/// [`write_atomic`] of bytes already in memory (a record, a model file, a PNG).
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic(path, |out| out.write_all(bytes))
}

/// A folder filled beside its destination, then renamed into place in one
/// step by [`commit`](Self::commit) or [`commit_entry`](Self::commit_entry).
/// Dropped without a commit (an error, a panic), it is removed; a killed
/// process leaves only a hidden `.<name>.*.tmp` folder beside the destination,
/// never a half-filled destination.
pub struct StagedDir {
    temp: tempfile::TempDir,
    dest: PathBuf,
}

impl StagedDir {
    /// An empty folder beside `dest` (same file system, so the commit is a
    /// rename), creating `dest`'s parent if missing.
    pub fn beside(dest: &Path) -> io::Result<StagedDir> {
        let in_context =
            |e: io::Error| io::Error::new(e.kind(), format!("staging {}: {e}", dest.display()));
        create_parent(dest).map_err(in_context)?;
        let name = dest.file_name().ok_or_else(|| {
            in_context(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file or folder name",
            ))
        })?;
        let parent = folder_of(dest);
        let prefix = format!(".{}.", name.to_string_lossy());
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // The committed folder gets the usual `0777 & !umask`, not a temp folder's `0700`.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o777));
        let temp = builder.tempdir_in(parent).map_err(in_context)?;
        Ok(StagedDir {
            temp,
            dest: dest.to_path_buf(),
        })
    }

    /// The staged folder, to be filled.
    pub fn path(&self) -> &Path {
        self.temp.path()
    }

    /// Renames the whole staged folder to the destination, which must not
    /// exist (or be an empty folder). On failure the staged folder is removed.
    pub fn commit(self) -> io::Result<()> {
        let from = self.temp.path().to_path_buf();
        self.rename(&from)
    }

    /// Renames `entry` (a file or folder inside the staged folder) to the
    /// destination and removes the rest: for a tool that writes more than the
    /// one thing wanted (an archive's extraction, a converter's output file).
    pub fn commit_entry(self, entry: &Path) -> io::Result<()> {
        let from = self.temp.path().join(entry);
        self.rename(&from)
    }

    fn rename(self, from: &Path) -> io::Result<()> {
        std::fs::rename(from, &self.dest).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "moving {} into {}: {e}",
                    from.display(),
                    self.dest.display()
                ),
            )
        })?;
        sync_dir(folder_of(&self.dest));
        if from == self.temp.path() {
            // Renamed away whole: nothing is left to remove at the old path.
            let _ = self.temp.keep();
        }
        // Otherwise what is left goes with the temp folder, on drop.
        Ok(())
    }
}

/// The folder `path` sits in: its parent, or `.` for a bare name.
fn folder_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the rename durable. Best effort: not every platform can open or
/// sync a folder, and the data itself is already synced.
fn sync_dir(dir: &Path) {
    #[cfg(unix)]
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    #[cfg(not(unix))]
    let _ = dir;
}
