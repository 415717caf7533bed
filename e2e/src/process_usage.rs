//! A process's memory and CPU time as Linux reports them in `/proc/PID/status` and `/proc/PID/stat`, so a
//! benchmark can watch another process (the manager) without instrumenting it.

use std::path::PathBuf;

/// Memory and CPU of a process at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessUsage {
    /// Resident set size now (`VmRSS`).
    pub rss_bytes: u64,
    /// The highest resident set size the process has had since it started (`VmHWM`, "high water mark").
    pub peak_rss_bytes: u64,
    /// User plus system CPU time the process has used since it started.
    pub cpu_seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} has no readable {field}")]
    Missing { path: PathBuf, field: &'static str },
}

/// Reads the usage of process `pid` now.
pub fn read(pid: u32) -> Result<ProcessUsage, Error> {
    let status_path = PathBuf::from(format!("/proc/{pid}/status"));
    let stat_path = PathBuf::from(format!("/proc/{pid}/stat"));
    let read = |path: &PathBuf| {
        std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.clone(),
            source,
        })
    };
    let status = read(&status_path)?;
    let stat = read(&stat_path)?;
    let kib = |field: &'static str| {
        status_kib(&status, field).ok_or_else(|| Error::Missing {
            path: status_path.clone(),
            field,
        })
    };
    let ticks = cpu_ticks(&stat).ok_or_else(|| Error::Missing {
        path: stat_path.clone(),
        field: "utime and stime",
    })?;
    Ok(ProcessUsage {
        rss_bytes: kib("VmRSS")? * 1024,
        peak_rss_bytes: kib("VmHWM")? * 1024,
        cpu_seconds: ticks as f64 / clock_ticks_per_second() as f64,
    })
}

/// A `Name:   1234 kB` field of `/proc/PID/status`, in KiB.
pub fn status_kib(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(field)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

/// `utime + stime` from `/proc/PID/stat`, in clock ticks. The second field is the command name in parentheses,
/// and it may itself hold spaces and parentheses, so fields are counted from the last `)`: after it come
/// field 3 (state) onwards, and utime and stime are fields 14 and 15.
pub fn cpu_ticks(stat: &str) -> Option<u64> {
    let after_command = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after_command.split_whitespace().collect();
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    Some(utime + stime)
}

/// `sysconf(_SC_CLK_TCK)`: the unit of the CPU times in `/proc/PID/stat` (100 on every usual Linux build).
fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a configuration value; it has no pointer arguments and no preconditions.
    #[allow(unsafe_code)]
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&t| t > 0).unwrap_or(100)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_of_proc_status() {
        let status = "Name:\tslipway\nVmPeak:\t  900000 kB\nVmHWM:\t   81234 kB\nVmRSS:\t   70000 kB\nThreads:\t5\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(70000));
        assert_eq!(status_kib(status, "VmHWM"), Some(81234));
        assert_eq!(status_kib(status, "Threads"), None, "not a kB field");
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn counts_stat_fields_after_a_command_name_with_spaces_and_parentheses() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime ...
        let stat =
            "4242 (tokio (worker) 1) S 1 4242 4242 0 -1 4194560 900 0 0 0 1234 56 0 0 20 0 5 0";
        assert_eq!(cpu_ticks(stat), Some(1234 + 56));
        assert_eq!(cpu_ticks("4242 (short) S 1 2"), None);
    }

    #[test]
    fn reads_this_process() {
        let usage = read(std::process::id()).unwrap();
        assert!(usage.rss_bytes > 0);
        assert!(usage.peak_rss_bytes >= usage.rss_bytes);
        assert!(usage.cpu_seconds >= 0.0);
    }
}
