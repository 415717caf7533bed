//! Control-plane processes that outlive the manager: each in its own process group, known by a pid file, adopted
//! when alive and restarted when dead.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::layout::ClusterDir;

/// Children this manager started. A child that exits stays a zombie until waited for; [`Children::reap`] does that
/// so a dead process is seen as dead.
#[derive(Default)]
pub struct Children(Mutex<HashMap<u32, Child>>);

impl Children {
    fn reap(&self) {
        let mut children = self.0.lock().unwrap_or_else(|e| e.into_inner());
        children.retain(|_, child| matches!(child.try_wait(), Ok(None)));
    }
}

/// The pid in `<dir>/run/<component>.pid` if that process is alive and is ours: its command line names this
/// cluster's directory, so a recycled pid of another program is not mistaken for it.
pub fn running(dir: &ClusterDir, component: &str, children: &Children) -> Option<u32> {
    children.reap();
    let pid: u32 = std::fs::read_to_string(dir.run().join(format!("{component}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The state follows the parenthesised command name; a zombie is not running.
    let state = stat.rsplit_once(')')?.1.split_whitespace().next()?;
    if state == "Z" {
        return None;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let root = dir.root().to_string_lossy();
    String::from_utf8_lossy(&cmdline)
        .contains(root.as_ref())
        .then_some(pid)
}

/// Starts `command` as `component` unless it runs already; returns whether it started it.
pub fn ensure(
    dir: &ClusterDir,
    component: &str,
    mut command: Command,
    children: &Children,
) -> std::io::Result<bool> {
    if running(dir, component, children).is_some() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir.run())?;
    std::fs::create_dir_all(dir.logs())?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.logs().join(format!("{component}.log")))?;
    // Its own process group: a signal to the manager's group (Ctrl-C, a pod's SIGTERM) does not take the
    // workload cluster down with it.
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command.spawn()?;
    let pid = child.id();
    std::fs::write(dir.run().join(format!("{component}.pid")), pid.to_string())?;
    children
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid, child);
    Ok(true)
}

/// Stops every process of the cluster (SIGTERM, then SIGKILL after a grace period) and removes the pid files of
/// those that are gone. A pid file goes only after its process: a manager killed while the processes stop (an
/// apiserver whose etcd is stopping takes seconds) leaves them findable, so the next one neither starts a second
/// set beside them nor loses the means to kill them.
pub fn stop_all(dir: &ClusterDir, children: &Children) {
    let Ok(entries) = std::fs::read_dir(dir.run()) else {
        return;
    };
    let mut pids = Vec::new();
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Some(component) = path
            .file_stem()
            .and_then(|s| s.to_str())
            .map(str::to_string)
        else {
            continue;
        };
        let pid = running(dir, &component, children);
        if let Some(pid) = pid {
            signal(pid, "TERM");
            pids.push((component, pid));
        }
        files.push((path, pid));
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for (_, pid) in &pids {
        while Instant::now() < deadline && alive(*pid, children) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(*pid, children) {
            signal(*pid, "KILL");
        }
    }
    // SIGKILL is delivered asynchronously: return only once every process is gone, so that "deleted" means gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|(_, pid)| alive(*pid, children)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    children.reap();
    for (path, pid) in files {
        if pid.is_none_or(|pid| !alive(pid, children)) {
            let _ = std::fs::remove_file(&path);
        }
    }
}

fn alive(pid: u32, children: &Children) -> bool {
    children.reap();
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().next() != Some("Z"))
        })
        .unwrap_or(false)
}

/// Signals a process group through kill(1), which keeps this crate free of unsafe code.
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .arg(format!("-{pid}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
