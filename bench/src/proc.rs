//! Running a child process and measuring it: wall time and peak resident memory
//! (`wait4`'s rusage, so it is that child's own high-water mark, not a poll).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub wall: Duration,
    /// Peak RSS in KiB.
    pub max_rss_kib: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} failed (wait status {status})")]
    Failed { program: String, status: i32 },
}

/// Runs `cmd` to completion (its stdout discarded unless the caller redirected it) and
/// measures it. A non-zero exit is an error.
pub fn run(cmd: &mut Command) -> Result<Measured, ProcError> {
    let program = format!("{:?}", cmd.get_program());
    let started = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| ProcError::Spawn {
            program: program.clone(),
            source,
        })?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it for our own child, which std has
    // not reaped (we never call `Child::wait`).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: valid pointers to locals, pid is our child.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(ProcError::Wait { program, source: e });
        }
    }
    let wall = started.elapsed();
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        return Err(ProcError::Failed { program, status });
    }
    Ok(Measured {
        wall,
        max_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
    })
}

/// The median of `runs` measurements of fresh commands from `make`.
pub fn median(
    runs: usize,
    mut make: impl FnMut() -> Command,
) -> Result<(Measured, Vec<Measured>), ProcError> {
    let mut all = Vec::new();
    for _ in 0..runs.max(1) {
        all.push(run(&mut make())?);
    }
    let mut sorted = all.clone();
    sorted.sort_by_key(|m| m.wall);
    Ok((sorted[sorted.len() / 2], all))
}
