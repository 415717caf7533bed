//! The cluster's etcd membership, changed the way kubeadm changes it: a member is added (by its peer URL) before
//! its etcd first starts, and removed before its etcd stops, through etcd's v3 JSON gateway on a running member.
//! One member at a time, so a 3-member etcd never waits on two members that are not there.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use slipway_provider::{ProviderError, Result};

/// How long one call to a member's etcd may take: a loopback call that takes longer finds a member in trouble.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// One member as etcd lists it. A member added but not started yet has no name.
#[derive(Debug, Clone, Deserialize)]
pub struct EtcdMember {
    /// A uint64, sent as a string by the JSON gateway.
    #[serde(rename = "ID")]
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(rename = "peerURLs", default)]
    pub peer_urls: Vec<String>,
}

#[derive(Deserialize)]
struct MemberList {
    #[serde(default)]
    members: Vec<EtcdMember>,
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> ProviderError {
    ProviderError::transient("EtcdUnavailable", format!("{what}: {e}"))
}

async fn post(client_url: &str, path: &str, body: serde_json::Value) -> Result<Vec<u8>> {
    let client = reqwest::Client::builder()
        .timeout(CALL_TIMEOUT)
        .build()
        .map_err(|e| unavailable("an HTTP client for etcd", e))?;
    let response = client
        .post(format!("{client_url}{path}"))
        .body(body.to_string())
        .send()
        .await
        .map_err(|e| unavailable(&format!("etcd at {client_url}{path}"), e))?;
    let status = response.status();
    let bytes = response
        .bytes()
        .await
        .map_err(|e| unavailable(&format!("etcd at {client_url}{path}"), e))?;
    if !status.is_success() {
        return Err(unavailable(
            &format!("etcd at {client_url}{path}"),
            format!("{status}: {}", String::from_utf8_lossy(&bytes)),
        ));
    }
    Ok(bytes.to_vec())
}

/// The members as the etcd at `client_url` knows them.
pub async fn list(client_url: &str) -> Result<Vec<EtcdMember>> {
    let bytes = post(client_url, "/v3/cluster/member/list", json!({})).await?;
    let list: MemberList =
        serde_json::from_slice(&bytes).map_err(|e| unavailable("etcd's member list", e))?;
    Ok(list.members)
}

/// Adds a member with `peer_url` unless the cluster has it already (a pass interrupted after the add), and
/// returns the membership with it.
pub async fn add(client_url: &str, peer_url: &str) -> Result<Vec<EtcdMember>> {
    let members = list(client_url).await?;
    if members
        .iter()
        .any(|m| m.peer_urls.iter().any(|u| u == peer_url))
    {
        return Ok(members);
    }
    post(
        client_url,
        "/v3/cluster/member/add",
        json!({ "peerURLs": [peer_url] }),
    )
    .await?;
    list(client_url).await
}

/// Removes the member with `peer_url`; nothing when the cluster has none (removed already).
pub async fn remove(client_url: &str, peer_url: &str) -> Result<()> {
    let members = list(client_url).await?;
    let Some(member) = members
        .iter()
        .find(|m| m.peer_urls.iter().any(|u| u == peer_url))
    else {
        return Ok(());
    };
    post(
        client_url,
        "/v3/cluster/member/remove",
        json!({ "ID": member.id }),
    )
    .await?;
    Ok(())
}

/// `--initial-cluster` for the member `name` at `peer_url` joining `members`: every started member by its name,
/// and the member not started yet (this one) by `name`.
pub fn initial_cluster(members: &[EtcdMember], name: &str, peer_url: &str) -> String {
    members
        .iter()
        .flat_map(|m| {
            let member_name = if m.peer_urls.iter().any(|u| u == peer_url) {
                name.to_string()
            } else {
                m.name.clone()
            };
            m.peer_urls
                .iter()
                .map(move |u| format!("{member_name}={u}"))
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Whether the etcd at `client_url` answers `/health` as healthy (it has a leader and serves reads).
pub async fn healthy(client_url: &str) -> bool {
    let Ok(client) = reqwest::Client::builder().timeout(CALL_TIMEOUT).build() else {
        return false;
    };
    let Ok(response) = client.get(format!("{client_url}/health")).send().await else {
        return false;
    };
    let Ok(bytes) = response.bytes().await else {
        return false;
    };
    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok_and(|v| v["health"] == "true")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, name: &str, peer: &str) -> EtcdMember {
        EtcdMember {
            id: id.into(),
            name: name.into(),
            peer_urls: vec![peer.into()],
        }
    }

    #[test]
    fn initial_cluster_names_the_member_not_started_yet_by_its_own_name() {
        let members = [
            member("1", "dev-cp-a", "http://127.0.0.1:1001"),
            member("2", "", "http://127.0.0.1:1002"),
        ];
        assert_eq!(
            initial_cluster(&members, "dev-cp-b", "http://127.0.0.1:1002"),
            "dev-cp-a=http://127.0.0.1:1001,dev-cp-b=http://127.0.0.1:1002"
        );
    }
}
