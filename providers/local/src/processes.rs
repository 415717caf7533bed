//! Control-plane processes that outlive the manager: each in its own process group, known by a pid file, adopted
//! when alive and restarted when dead.
//!
//! A process lives in a *home*: a directory with `run/<component>.pid` and `logs/<component>.log` (a cluster's
//! directory for kwok and HAProxy, a member's for its etcd, apiserver, controller-manager and scheduler). A process
//! is known as the home's by its program and an argument naming a path under the home.

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// The pid in `<home>/run/<component>.pid` if that process is alive and is ours (see [`is_ours`]), so a recycled
/// pid of another program is not mistaken for it.
pub fn running(home: &Path, component: &str, children: &Children) -> Option<u32> {
    children.reap();
    let pid: u32 = std::fs::read_to_string(pid_file(home, component))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    is_ours(pid, home, component).then_some(pid)
}

fn pid_file(home: &Path, component: &str) -> std::path::PathBuf {
    home.join("run").join(format!("{component}.pid"))
}

/// Whether `pid` is a live `component` of `home`: not a zombie, its program is the component's binary and an
/// argument names a path under `home`.
fn is_ours(pid: u32, home: &Path, component: &str) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // The state follows the parenthesised command name; a zombie is not running.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if state.is_none_or(|state| state == "Z") {
        return false;
    }
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let mut args = cmdline
        .split(|b| *b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned());
    let program_is_component = args
        .next()
        .is_some_and(|program| Path::new(&program).file_name() == Some(component.as_ref()));
    let under = format!("{}/", home.to_string_lossy());
    program_is_component && args.any(|arg| arg.contains(&under))
}

/// Every live `component` under `home`, pid file or not: one started by a manager killed before it wrote the pid
/// file, a HAProxy replaced by a reload that still drains its connections. Found by scanning `/proc`.
pub fn all_of(home: &Path, component: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| is_ours(*pid, home, component))
        .collect()
}

/// Starts `command` as `component` unless it runs already; returns whether it started it.
/// A component with no pid file but found running (its manager was killed before it wrote the file) is adopted.
pub fn ensure(
    home: &Path,
    component: &str,
    command: Command,
    children: &Children,
) -> std::io::Result<bool> {
    if running(home, component, children).is_some() {
        return Ok(false);
    }
    std::fs::create_dir_all(home.join("run"))?;
    if let Some(pid) = all_of(home, component).first() {
        record(home, component, *pid)?;
        return Ok(false);
    }
    start(home, component, command, children)?;
    Ok(true)
}

/// Records `pid` as `home`'s `component`.
pub fn record(home: &Path, component: &str, pid: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(home.join("run"))?;
    std::fs::write(pid_file(home, component), pid.to_string())
}

/// Starts `command` as `component` in its own process group, logging to `logs/<component>.log`, and records its
/// pid (replacing the pid file of any earlier one).
pub fn start(
    home: &Path,
    component: &str,
    mut command: Command,
    children: &Children,
) -> std::io::Result<u32> {
    std::fs::create_dir_all(home.join("run"))?;
    std::fs::create_dir_all(home.join("logs"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("logs").join(format!("{component}.log")))?;
    // Its own process group: a signal to the manager's group (Ctrl-C, a pod's SIGTERM) does not take the
    // workload cluster down with it.
    command
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    let child = command.spawn()?;
    let pid = child.id();
    record(home, component, pid)?;
    children
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid, child);
    Ok(pid)
}

/// Stops every one of `components` running under `home` (SIGTERM, then SIGKILL after a grace period), those a pid
/// file names and those without one (a member's processes, found under its cluster's home, included), and removes
/// the pid files of those that are gone. A pid file goes only after its process: a manager killed while the
/// processes stop (an apiserver whose etcd is stopping takes seconds) leaves them findable, so the next one neither
/// starts a second set beside them nor loses the means to kill them.
pub fn stop_all(home: &Path, components: &[&str], children: &Children) {
    children.reap();
    let pids: Vec<u32> = components
        .iter()
        .flat_map(|component| all_of(home, component))
        .collect();
    for pid in &pids {
        signal(*pid, "TERM");
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for pid in &pids {
        while Instant::now() < deadline && alive(*pid, children) {
            std::thread::sleep(Duration::from_millis(50));
        }
        if alive(*pid, children) {
            signal(*pid, "KILL");
        }
    }
    // SIGKILL is delivered asynchronously: return only once every process is gone, so that "deleted" means gone.
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline && pids.iter().any(|pid| alive(*pid, children)) {
        std::thread::sleep(Duration::from_millis(20));
    }
    children.reap();
    for component in components {
        if running(home, component, children).is_none() {
            let _ = std::fs::remove_file(pid_file(home, component));
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

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    /// A stand-in for a component: `sh` under the component's name, its argument a path in the cluster directory,
    /// as every real component's flags are.
    fn component_command(bin: &Path, home: &Path) -> Command {
        let mut command = Command::new(bin);
        command
            // Not a lone command: dash would exec it and the process would no longer be the component.
            .args(["-c", "sleep 60; true"])
            .arg(home.join("marker"));
        command
    }

    fn setup() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin").join("kwok");
        std::fs::create_dir_all(bin.parent().unwrap()).unwrap();
        symlink("/bin/sh", &bin).unwrap();
        let home = tmp.path().join("cluster");
        std::fs::create_dir_all(&home).unwrap();
        (tmp, home, bin)
    }

    #[test]
    fn a_component_started_without_its_pid_file_is_adopted_not_started_twice() {
        let (_tmp, dir, bin) = setup();
        let children = Children::default();
        // A manager killed between spawn and writing the pid file leaves exactly this.
        let mut orphan = component_command(&bin, &dir)
            .process_group(0)
            .spawn()
            .unwrap();
        let started = ensure(&dir, "kwok", component_command(&bin, &dir), &children).unwrap();
        assert!(!started, "a second kwok was started beside the orphan");
        assert_eq!(running(&dir, "kwok", &children), Some(orphan.id()));

        stop_all(&dir, &["kwok"], &children);
        let status = orphan.wait().unwrap();
        assert!(!status.success(), "the adopted kwok was not stopped");
        assert!(!pid_file(&dir, "kwok").exists());
    }

    #[test]
    fn stop_all_stops_a_component_no_pid_file_names() {
        let (_tmp, dir, bin) = setup();
        let children = Children::default();
        let mut orphan = component_command(&bin, &dir)
            .process_group(0)
            .spawn()
            .unwrap();
        stop_all(&dir, &["kwok"], &children);
        assert!(
            orphan.try_wait().unwrap().is_some(),
            "the orphan kwok still runs"
        );
        assert_eq!(all_of(&dir, "kwok"), Vec::<u32>::new());
    }

    #[test]
    fn another_clusters_component_or_program_is_not_ours() {
        let (tmp, dir, bin) = setup();
        let children = Children::default();
        let other = tmp.path().join("cluster-b");
        std::fs::create_dir_all(&other).unwrap();
        // The other cluster's directory name starts with this one's: a prefix is not a match.
        let mut theirs = component_command(&bin, &other)
            .process_group(0)
            .spawn()
            .unwrap();
        assert_eq!(all_of(&dir, "kwok"), Vec::<u32>::new());
        assert_eq!(
            all_of(&dir, "etcd"),
            Vec::<u32>::new(),
            "the program is kwok, not etcd"
        );
        assert!(ensure(&dir, "kwok", component_command(&bin, &dir), &children).unwrap());
        stop_all(&dir, &["kwok"], &children);
        assert!(
            theirs.try_wait().unwrap().is_none(),
            "the other cluster's kwok was stopped"
        );
        stop_all(&other, &["kwok"], &children);
        theirs.wait().unwrap();
    }
}
