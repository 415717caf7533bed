//! The cluster's API endpoint: an HAProxy process per cluster, TCP on the endpoint port to every member's apiserver
//! that answers `/readyz`, as Cluster API's Docker provider puts HAProxy in front of its control-plane containers.
//!
//! The configuration is a file named by its content's hash. When the members change, a new HAProxy starts on the
//! new file with `-sf <old pid>`: it binds the same port beside the old one, which stops accepting and finishes
//! its open connections (at most [`DRAIN`]), so clients see no refused connection.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use slipway_provider::{ProviderError, Result};
use tracing::info;

use crate::layout::{ClusterDir, MemberRecord};
use crate::processes::{self, Children, log_tail};

pub const COMPONENT: &str = "haproxy";

/// How long a replaced HAProxy may keep serving the connections it had (watches last long).
const DRAIN: Duration = Duration::from_secs(30);

/// HAProxy's configuration for `members` behind `endpoint_port`.
pub fn config(endpoint_port: u16, members: &[MemberRecord]) -> String {
    let mut text = format!(
        "# Written by Slipway's local provider; replaced when the control-plane members change.
global
  hard-stop-after {drain}s
defaults
  mode tcp
  timeout connect 5s
  timeout client 1h
  timeout server 1h
frontend apiserver
  bind 127.0.0.1:{endpoint_port}
  default_backend members
backend members
  option httpchk GET /readyz
  http-check expect status 200
",
        drain = DRAIN.as_secs()
    );
    for member in members {
        text.push_str(&format!(
            "  server {} 127.0.0.1:{} check check-ssl verify none inter 1s fall 2 rise 1\n",
            member.name, member.ports.apiserver
        ));
    }
    text
}

fn config_path(dir: &ClusterDir, text: &str) -> PathBuf {
    let mut hasher = DefaultHasher::new();
    text.hash(&mut hasher);
    dir.root()
        .join(format!("haproxy-{:016x}.cfg", hasher.finish()))
}

fn io(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::transient("LocalStateError", format!("{what}: {e}"))
}

/// Whether the running HAProxy (by pid) was started on `config`.
fn runs_on(pid: u32, config: &Path) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
        cmdline
            .split(|b| *b == 0)
            .any(|arg| arg == config.as_os_str().as_encoded_bytes())
    })
}

/// Runs HAProxy in front of `members` on the cluster's endpoint port: starts it when none runs, replaces it when
/// the members changed, leaves it alone otherwise.
pub fn ensure(
    dir: &ClusterDir,
    haproxy: &Path,
    endpoint_port: u16,
    members: &[MemberRecord],
    children: &Children,
) -> Result<()> {
    let text = config(endpoint_port, members);
    let path = config_path(dir, &text);
    if !path.is_file() {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &text).map_err(|e| io("writing the HAProxy configuration", e))?;
        std::fs::rename(&tmp, &path).map_err(|e| io("writing the HAProxy configuration", e))?;
    }
    // Every HAProxy of this cluster: the one its pid file names, one a killed manager started without writing the
    // file, replaced ones still draining.
    let running = processes::all_of(dir.root(), COMPONENT);
    if let Some(pid) = running.iter().find(|pid| runs_on(**pid, &path)) {
        if processes::running(dir.root(), COMPONENT, children) != Some(*pid) {
            processes::record(dir.root(), COMPONENT, *pid)
                .map_err(|e| io("adopting HAProxy", e))?;
        }
        return Ok(());
    }
    let mut command = Command::new(haproxy);
    // -db: stay in the foreground, a process the manager knows by its pid file.
    command.arg("-db").arg("-f").arg(&path);
    if !running.is_empty() {
        command.arg("-sf");
        command.args(running.iter().map(u32::to_string));
    }
    let pid = processes::start(dir.root(), COMPONENT, command, children)
        .map_err(|e| io("starting HAProxy", e))?;
    info!(dir = %dir.root().display(), pid, members = members.len(), "started HAProxy");
    // A configuration HAProxy refuses, or a port taken, shows at once.
    std::thread::sleep(Duration::from_millis(200));
    if processes::running(dir.root(), COMPONENT, children).is_none() {
        return Err(ProviderError::transient(
            "LoadBalancerExited",
            format!(
                "HAProxy exited at start; last lines of its log:\n{}",
                log_tail(&dir.logs().join(format!("{COMPONENT}.log")))
            ),
        ));
    }
    remove_other_configs(dir, &path);
    Ok(())
}

/// Configurations no HAProxy was started on any more; the draining one keeps its file open, which is fine.
fn remove_other_configs(dir: &ClusterDir, current: &Path) {
    let Ok(entries) = std::fs::read_dir(dir.root()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with("haproxy-") && name.ends_with(".cfg") && path != current {
            let _ = std::fs::remove_file(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use jiff::Timestamp;

    use super::*;
    use crate::layout::MemberPorts;

    fn member(name: &str, apiserver: u16) -> MemberRecord {
        MemberRecord {
            name: name.into(),
            template_hash: "abc1234".into(),
            created_at: Timestamp::UNIX_EPOCH,
            ports: MemberPorts {
                apiserver,
                etcd_client: 1,
                etcd_peer: 2,
                scheduler: 3,
            },
            initial_cluster: None,
            first: false,
            version: None,
        }
    }

    #[test]
    fn the_configuration_balances_tcp_over_every_member_checked_by_readyz() {
        let text = config(6443, &[member("a", 7001), member("b", 7002)]);
        assert!(text.contains("bind 127.0.0.1:6443"), "{text}");
        assert!(text.contains("mode tcp"), "{text}");
        assert!(text.contains("option httpchk GET /readyz"), "{text}");
        assert!(
            text.contains("server a 127.0.0.1:7001 check check-ssl"),
            "{text}"
        );
        assert!(
            text.contains("server b 127.0.0.1:7002 check check-ssl"),
            "{text}"
        );
    }

    #[test]
    fn haproxy_accepts_the_configuration() {
        let Some(haproxy) = crate::find_haproxy() else {
            panic!("HAProxy is not installed: apt-get install haproxy (hack/test.sh installs it)");
        };
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("haproxy.cfg");
        std::fs::write(&path, config(6443, &[member("a", 7001)])).unwrap();
        let output = Command::new(haproxy)
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
