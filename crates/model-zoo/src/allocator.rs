//! How libtorch's CPU tensor memory is served: chosen once, first thing, by
//! programs that train or run models on the CPU.
//!
//! libtorch allocates CPU tensors with the C allocator. A batch's activations
//! are tens to hundreds of megabytes each, above glibc's largest mmap
//! threshold (32 MiB), so by default every one is a fresh `mmap` whose pages
//! fault in 4 KiB at a time on first touch, and an `munmap` when freed: the
//! kernel spent as long as the model. Two ways out, measured with
//! `cargo xtask bench memory` (Lite0 bbox model unfrozen, batch 64, 2 cores,
//! beside PyTorch's 4.2 images/s and 6.1 GB in the same run):
//! - transparent huge pages for malloc's mmapped blocks (glibc's
//!   `glibc.malloc.hugetlb=1` tunable): the same blocks fault in 2 MiB at a
//!   time and are still returned when freed: 9.0 images/s, 5.5 GB;
//! - glibc's heap for every block, never trimmed (`M_MMAP_MAX = 0`): no faults
//!   after the first steps, but freed blocks of one size wait in the heap while
//!   blocks of other sizes are carved anew: 5.7 images/s, 6.7 GB (8.8 GB over
//!   the bbox pipeline's changing freeze_to phases).
//!
//! Huge pages are used wherever the kernel offers them (`always` or `madvise`
//! in /sys/kernel/mm/transparent_hugepage/enabled); the heap setting only
//! where it does not. `LESSON8_ALLOCATOR=system` leaves glibc as configured.

use std::fmt;

/// The allocator setting in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TensorMemory {
    /// glibc's defaults with transparent huge pages for mmapped blocks.
    HugePages,
    /// glibc's heap for every block, never trimmed.
    KeepFreed,
    /// Whatever glibc is configured to do (not glibc, or asked for).
    System,
}

impl fmt::Display for TensorMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TensorMemory::HugePages => "glibc malloc, transparent huge pages for large blocks",
            TensorMemory::KeepFreed => {
                "glibc malloc, large blocks kept in the heap (no huge pages here)"
            }
            TensorMemory::System => "the C allocator as configured",
        })
    }
}

/// The glibc tunable that makes malloc ask for transparent huge pages.
const HUGE_PAGES_TUNABLE: &str = "glibc.malloc.hugetlb=1";

/// Chooses how tensor memory is served (see the module docs). Call first
/// thing in `main`, before any thread starts: where huge pages are to be
/// used and the tunable is not yet in the environment, the program re-executes
/// itself with it (glibc reads tunables only at start-up), so this returns
/// only in the process that runs on.
pub fn configure_tensor_memory() -> TensorMemory {
    if std::env::var("LESSON8_ALLOCATOR").is_ok_and(|v| v == "system") {
        return TensorMemory::System;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if tunables.contains(HUGE_PAGES_TUNABLE) {
            return TensorMemory::HugePages;
        }
        if transparent_huge_pages_offered() {
            let value = if tunables.is_empty() {
                HUGE_PAGES_TUNABLE.to_string()
            } else {
                format!("{tunables}:{HUGE_PAGES_TUNABLE}")
            };
            let error = reexec_with("GLIBC_TUNABLES", &value);
            // eprintln, not tracing: this runs before any subscriber exists.
            eprintln!("warning: could not restart with {HUGE_PAGES_TUNABLE} ({error}); keeping freed memory in the heap instead");
        }
        keep_freed_tensor_memory();
        TensorMemory::KeepFreed
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    TensorMemory::System
}

/// Whether the kernel gives transparent huge pages to a process that asks.
#[cfg(target_os = "linux")]
fn transparent_huge_pages_offered() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|modes| modes.contains("[always]") || modes.contains("[madvise]"))
}

/// Replaces this process with itself, `name=value` added to its environment.
/// Returns only if that failed.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn reexec_with(name: &str, value: &str) -> std::io::Error {
    use std::os::unix::process::CommandExt;
    let mut args = std::env::args_os();
    let program = args.next().unwrap_or_default();
    std::process::Command::new("/proc/self/exe")
        .arg0(program)
        .args(args)
        .env(name, value)
        .exec()
}

/// Tells glibc's malloc to serve large blocks from its heaps and keep freed
/// memory instead of returning it to the kernel; a no-op off glibc.
pub fn keep_freed_tensor_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is thread-safe.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
