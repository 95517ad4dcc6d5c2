//! Peak resident memory of each stage: the runner's own (for stages that run
//! in it), reset before the stage, and that of the processes a stage starts
//! (the trainer), taken from the kernel's accounting when they are reaped.

use std::cell::Cell;
use std::process::{Command, ExitStatus};

thread_local! {
    /// The largest peak of a child process reaped since the last [`StageMeter::start`].
    static CHILD_PEAK: Cell<u64> = const { Cell::new(0) };
}

/// Measures one stage's peak memory.
pub struct StageMeter;

impl StageMeter {
    /// Resets this process's high-water mark (Linux: `/proc/self/clear_refs`)
    /// and forgets earlier children's peaks.
    pub fn start() -> Self {
        #[cfg(target_os = "linux")]
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        CHILD_PEAK.with(|peak| peak.set(0));
        StageMeter
    }

    /// The stage's peak in bytes: the larger of the runner's own high-water
    /// mark since [`StageMeter::start`] and its children's; `None` where the
    /// platform does not tell.
    pub fn peak_bytes(&self) -> Option<u64> {
        let own = own_peak_bytes();
        let child = CHILD_PEAK.with(Cell::get);
        match own {
            Some(own) => Some(own.max(child)),
            None => Some(child).filter(|&c| c > 0),
        }
    }
}

/// This process's `VmHWM` (peak resident set) in bytes.
fn own_peak_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Runs `cmd` to completion like [`Command::status`], and records its peak
/// resident memory (`ru_maxrss` of the reaped process) for the current stage.
pub fn status(cmd: &mut Command) -> std::io::Result<ExitStatus> {
    // A stage's process dies with the runner: a trainer orphaned by `kill -9` of the
    // runner would go on writing into the work folder that the next run resumes from.
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let child = cmd.spawn()?;
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        let pid = child.id() as libc::pid_t;
        let mut raw_status = 0;
        // SAFETY: a zeroed rusage is a valid value for wait4 to fill in.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        loop {
            // SAFETY: `pid` is our own unreaped child; both pointers are valid.
            let reaped = unsafe { libc::wait4(pid, &mut raw_status, 0, &mut usage) };
            if reaped == pid {
                break;
            }
            let error = std::io::Error::last_os_error();
            if error.kind() != std::io::ErrorKind::Interrupted {
                return Err(error);
            }
        }
        // Linux reports ru_maxrss in kilobytes.
        let peak = usage.ru_maxrss.max(0) as u64 * 1024;
        CHILD_PEAK.with(|p| p.set(p.get().max(peak)));
        Ok(ExitStatus::from_raw(raw_status))
    }
    #[cfg(not(unix))]
    {
        let mut child = child;
        child.wait()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn a_childs_peak_is_recorded_and_reset_per_stage() {
        let meter = StageMeter::start();
        // A child that touches about 200 MB.
        let status = status(Command::new("python3").args([
            "-c",
            "b = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1",
        ]))
        .unwrap();
        assert!(status.success());
        let peak = meter.peak_bytes().unwrap();
        assert!(peak > 200 * 1024 * 1024, "peak {peak}");
        let next = StageMeter::start();
        assert!(next.peak_bytes().unwrap() < 200 * 1024 * 1024);
    }

    #[test]
    fn a_failing_child_keeps_its_exit_code() {
        let status = status(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        assert_eq!(status.code(), Some(3));
    }
}
