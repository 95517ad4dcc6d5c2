//! One run per output folder: `pipeline` and `stage` hold an exclusive `flock` on
//! `<out>/.state/lock` while they run. A second run on the same folder says who
//! holds it and waits; the kernel drops the lock when its holder exits, however it
//! exits, so a killed run never leaves it stuck.

use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::Path;

/// Held for as long as the value lives.
pub struct OutLock {
    _file: File,
}

impl OutLock {
    pub fn acquire(out: &Path) -> io::Result<OutLock> {
        let state = out.join(".state");
        let naming = |path: &Path, e: io::Error| {
            io::Error::new(e.kind(), format!("locking {}: {e}", path.display()))
        };
        std::fs::create_dir_all(&state).map_err(|e| naming(out, e))?;
        let path = state.join("lock");
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| naming(&path, e))?;
        if !flock(&file, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| naming(out, e))? {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            eprintln!(
                "another run ({}) is using {}; waiting for it to finish (Ctrl-C to stop waiting)",
                holder.trim(),
                out.display()
            );
            flock(&file, libc::LOCK_EX).map_err(|e| naming(out, e))?;
            eprintln!("the other run finished; going on");
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "pid {}", std::process::id())?;
        Ok(OutLock { _file: file })
    }
}

/// `flock(2)`: false when a non-blocking request finds the lock taken.
fn flock(file: &File, operation: libc::c_int) -> io::Result<bool> {
    loop {
        // SAFETY: flock on a file descriptor this process owns.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let error = io::Error::last_os_error();
        match error.raw_os_error() {
            Some(libc::EWOULDBLOCK) => return Ok(false),
            Some(libc::EINTR) => continue,
            _ => return Err(error),
        }
    }
}
