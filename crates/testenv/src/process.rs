//! Child processes that never outlive the test binary.
//!
//! Three mechanisms together make sure of that:
//! 1. Dropping a [`Process`] sends SIGTERM to its process group, waits briefly, then sends SIGKILL and reaps it.
//!    Drop also runs while a panicking test unwinds.
//! 2. Every child is started with `PR_SET_PDEATHSIG = SIGKILL`, so the kernel kills it when the test binary dies,
//!    even by SIGKILL or abort, when no destructor runs. The signal fires when the *thread* that forked the child
//!    exits, not the process, so all children are forked from one dedicated thread that lives as long as the
//!    process (tokio's test runtimes and blocking threads come and go).
//! 3. Each child leads its own process group, so the kill in (1) reaches whatever it forked too.
//!
//! Environments kept in a `static` are never dropped; an `atexit` hook kills what is still registered and removes
//! their directories when the test binary exits normally.
#![allow(unsafe_code)] // pre_exec, prctl, kill and atexit have no safe wrappers in std.

use std::collections::BTreeSet;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{LazyLock, Mutex, Once, mpsc};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// A running child process, its log file, and the promise to stop it.
pub struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with stdout and stderr appended to `log`.
    pub fn spawn(name: &'static str, mut command: Command, log: &Path) -> Result<Process> {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        command
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let parent = std::process::id() as libc::pid_t;
        unsafe {
            command.pre_exec(move || {
                if libc::setpgid(0, 0) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died between fork and prctl; then nobody would ever kill us.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
        let child = on_spawner_thread(move || command.spawn())
            .map_err(|source| Error::Spawn { name, source })?;
        register_pid(child.id());
        Ok(Process {
            name,
            child,
            log: log.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    pub fn log(&self) -> &Path {
        &self.log
    }

    /// An error, with the end of the log, when the process has already exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => Err(Error::ExitedEarly {
                name: self.name,
                status: status.to_string(),
                log: self.log.clone(),
                tail: log_tail(&self.log),
            }),
        }
    }

    /// SIGTERM to the process group, then SIGKILL after `grace`; reaps the child.
    pub fn stop(&mut self, grace: Duration) {
        let pid = self.child.id();
        if self.child.try_wait().ok().flatten().is_none() {
            signal_group(pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            while Instant::now() < deadline {
                if self.child.try_wait().ok().flatten().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        // Also when the leader is gone: its children may still hold the group.
        signal_group(pid, libc::SIGKILL);
        let _ = self.child.wait();
        unregister_pid(pid);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(2));
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

/// The last 30 lines of a log file, for error messages.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

type Job = Box<dyn FnOnce() + Send>;

/// The one thread every child is forked from (see the module docs for why).
static SPAWNER: LazyLock<mpsc::Sender<Job>> = LazyLock::new(|| {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("testenv-spawner".into())
        .spawn(move || {
            for job in rx {
                job();
            }
        })
        .expect("start the testenv spawner thread");
    tx
});

fn on_spawner_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    SPAWNER
        .send(Box::new(move || {
            let _ = tx.send(f());
        }))
        .expect("the spawner thread lives as long as the process");
    rx.recv().expect("the spawner thread answers every job")
}

static LIVE_PIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static PID_FILE_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static OTHER_PIDS: Mutex<BTreeSet<u32>> = Mutex::new(BTreeSet::new());
static LIVE_DIRS: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static AT_EXIT: Once = Once::new();

fn register_pid(pid: u32) {
    install_exit_hook();
    LIVE_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid);
}

fn unregister_pid(pid: u32) {
    LIVE_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pid);
}

/// Removes `dir` when the process exits, unless [`forget_dir`] was called first.
pub fn remove_dir_at_exit(dir: &Path) {
    install_exit_hook();
    LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir.to_path_buf());
}

/// At exit, kills the process group of every `*.pid` file under `dir` (any depth). For processes that are meant
/// to outlive their parent, such as the local provider's workload clusters, and must still not outlive a test.
pub fn kill_pid_files_at_exit(dir: &Path) {
    install_exit_hook();
    PID_FILE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(dir.to_path_buf());
}

/// At exit, kills `pid` (a helper such as an emulator that a test started and keeps for the whole binary).
pub fn kill_at_exit(pid: u32) {
    install_exit_hook();
    OTHER_PIDS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid);
}

fn pid_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            pid_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "pid") {
            found.push(path);
        }
    }
}

pub fn forget_dir(dir: &Path) {
    LIVE_DIRS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(dir);
}

fn install_exit_hook() {
    AT_EXIT.call_once(|| unsafe {
        libc::atexit(clean_up_at_exit);
    });
}

extern "C" fn clean_up_at_exit() {
    if let Ok(pids) = OTHER_PIDS.lock() {
        for pid in pids.iter() {
            unsafe {
                libc::kill(*pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
    if let Ok(dirs) = PID_FILE_DIRS.lock() {
        let mut found = Vec::new();
        for dir in dirs.iter() {
            pid_files(dir, &mut found);
        }
        for file in found {
            if let Some(pid) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.trim().parse::<u32>().ok())
            {
                signal_group(pid, libc::SIGKILL);
            }
        }
    }
    if let Ok(pids) = LIVE_PIDS.lock() {
        for pid in pids.iter() {
            signal_group(*pid, libc::SIGKILL);
        }
    }
    if let Ok(dirs) = LIVE_DIRS.lock() {
        for dir in dirs.iter() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
