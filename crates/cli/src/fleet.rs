//! `slipway fleet`: the view a platform team asks for, one row per cluster: where it runs, how far it has come,
//! which template revision it came from, nodes ready of desired, how many objects Slipway keeps for it, what it
//! costs and how long it has left.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use serde::Serialize;
use slipway_api::conditions::{self, READY};
use slipway_api::{Cluster, MachinePool};

use crate::kube_context::ContextArgs;
use crate::output::{self, Palette, Table};

/// The label Cluster API (and Slipway) put on every Secret made for a cluster.
const CLUSTER_NAME_LABEL: &str = "cluster.x-k8s.io/cluster-name";

#[derive(clap::Args)]
#[command(after_help = "Examples:
  slipway fleet -A --sort cost
  slipway fleet -l team=payments -o wide --watch")]
pub struct Args {
    #[command(flatten)]
    context: ContextArgs,
    /// Clusters of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// Only clusters whose labels match, e.g. team=payments,env!=prod.
    #[arg(short = 'l', long, value_name = "SELECTOR")]
    selector: Option<String>,
    /// Order of the rows: cost (highest so far first), expires (soonest first), age (oldest first), name.
    #[arg(long, value_enum, default_value = "name")]
    sort: SortKey,
    /// wide adds the Kubernetes version and the Ready reason; json and yaml print the rows as data.
    #[arg(short = 'o', long, value_enum)]
    output: Option<FleetFormat>,
    /// Keep the table on screen, refreshed every --interval.
    #[arg(short = 'w', long)]
    watch: bool,
    /// How often --watch refreshes, e.g. 2s.
    #[arg(long, default_value = "2s", value_parser = crate::duration::parse)]
    interval: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SortKey {
    Cost,
    Expires,
    Age,
    Name,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FleetFormat {
    Wide,
    Json,
    Yaml,
}

/// One cluster, with everything the table shows, as data (what `-o json|yaml` prints).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    pub namespace: String,
    pub name: String,
    pub provider: Option<String>,
    pub phase: Option<String>,
    /// Status of the Ready condition.
    pub ready: Option<String>,
    pub ready_reason: Option<String>,
    pub kubernetes_version: String,
    /// `name@revision` of `spec.template`.
    pub template: Option<String>,
    pub nodes_ready: i32,
    pub nodes_desired: i32,
    /// The Cluster, its MachinePools and its Secrets.
    pub resources: usize,
    pub cost_per_hour: Option<f64>,
    pub currency: Option<String>,
    /// `cost_per_hour` times the cluster's age.
    pub cost_so_far: Option<f64>,
    pub expires_at: Option<Time>,
    pub created_at: Option<Time>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let session = args.context.connect().await?;
    let namespace = (!args.all_namespaces).then_some(session.namespace.as_str());
    loop {
        let rows = fetch_rows(
            &session.client,
            namespace,
            args.selector.as_deref(),
            args.sort,
        )
        .await?;
        let now = Timestamp::now();
        match args.output {
            Some(FleetFormat::Json) => output::print_structured(&rows, output::Format::Json)?,
            Some(FleetFormat::Yaml) => output::print_structured(&rows, output::Format::Yaml)?,
            wide => {
                let palette = Palette::for_stdout();
                let mut text = if rows.is_empty() {
                    match namespace {
                        Some(ns) => format!("No clusters found in namespace {ns}.\n"),
                        None => "No clusters found.\n".to_string(),
                    }
                } else {
                    render(
                        &rows,
                        now,
                        wide == Some(FleetFormat::Wide),
                        namespace.is_none(),
                        palette,
                    )
                };
                if args.watch && output::stdout_is_terminal() {
                    // Home the cursor and clear the screen: the table is redrawn in place.
                    text = format!("\x1b[H\x1b[2J{text}");
                } else if args.watch {
                    text.push('\n');
                }
                print!("{text}");
            }
        }
        if !args.watch {
            return Ok(());
        }
        tokio::time::sleep(args.interval).await;
    }
}

async fn fetch_rows(
    client: &Client,
    namespace: Option<&str>,
    selector: Option<&str>,
    sort: SortKey,
) -> anyhow::Result<Vec<Row>> {
    let (clusters, pools, secrets) = match namespace {
        Some(ns) => (
            Api::<Cluster>::namespaced(client.clone(), ns),
            Api::<MachinePool>::namespaced(client.clone(), ns),
            Api::<Secret>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let mut params = ListParams::default();
    if let Some(selector) = selector {
        params = params.labels(selector);
    }
    let clusters = clusters
        .list(&params)
        .await
        .context("listing Clusters")?
        .items;
    // One list of each kind for the whole fleet, grouped here, rather than a list per cluster.
    let pools = pools
        .list(&ListParams::default())
        .await
        .context("listing MachinePools")?
        .items;
    // Metadata only: counting Secrets must not download the credentials in them.
    let secrets = match secrets
        .list_metadata(&ListParams::default().labels(CLUSTER_NAME_LABEL))
        .await
    {
        Ok(list) => list.items.into_iter().map(|s| s.metadata).collect(),
        Err(error) => {
            eprintln!(
                "warning: cannot list Secrets ({error}); RESOURCES counts only Clusters and MachinePools"
            );
            Vec::new()
        }
    };
    let mut secret_counts: BTreeMap<(String, String), usize> = BTreeMap::new();
    for meta in secrets {
        if let Some(cluster) = meta.labels.as_ref().and_then(|l| l.get(CLUSTER_NAME_LABEL)) {
            *secret_counts
                .entry((meta.namespace.clone().unwrap_or_default(), cluster.clone()))
                .or_default() += 1;
        }
    }
    let mut rows = build_rows(&clusters, &pools, &secret_counts, Timestamp::now());
    sort_rows(&mut rows, sort);
    Ok(rows)
}

/// Rows from the objects alone; `now` prices the hours so far.
pub fn build_rows(
    clusters: &[Cluster],
    pools: &[MachinePool],
    secret_counts: &BTreeMap<(String, String), usize>,
    now: Timestamp,
) -> Vec<Row> {
    clusters
        .iter()
        .map(|cluster| {
            let namespace = cluster.namespace().unwrap_or_default();
            let name = cluster.name_any();
            let own_pools: Vec<&MachinePool> = pools
                .iter()
                .filter(|p| p.namespace().as_deref() == Some(&namespace))
                .filter(|p| p.spec.cluster_name == name)
                .collect();
            let status = cluster.status.clone().unwrap_or_default();
            let ready = conditions::find(&status.conditions, READY);
            let created_at = cluster.metadata.creation_timestamp.clone();
            let cost_per_hour = status
                .cost
                .as_ref()
                .and_then(|c| c.per_hour.parse::<f64>().ok());
            let cost_so_far = cost_per_hour
                .zip(created_at.as_ref())
                .map(|(per_hour, created)| {
                    let hours = now.duration_since(created.0).as_secs_f64().max(0.0) / 3600.0;
                    per_hour * hours
                });
            Row {
                provider: status.provider.clone().or_else(|| {
                    cluster
                        .spec
                        .infrastructure
                        .provider_name()
                        .map(String::from)
                }),
                phase: status.phase.map(|p| format!("{p:?}")),
                ready: ready.map(|c| c.status.clone()),
                ready_reason: ready.map(|c| c.reason.clone()),
                kubernetes_version: cluster.spec.kubernetes.version.clone(),
                template: cluster.spec.template.as_ref().map(|t| match &t.revision {
                    Some(revision) => format!("{}@{revision}", t.name),
                    None => t.name.clone(),
                }),
                nodes_ready: own_pools
                    .iter()
                    .map(|p| p.status.as_ref().map_or(0, |s| s.ready_replicas))
                    .sum(),
                nodes_desired: own_pools.iter().map(|p| p.spec.replicas).sum(),
                resources: 1
                    + own_pools.len()
                    + secret_counts
                        .get(&(namespace.clone(), name.clone()))
                        .copied()
                        .unwrap_or(0),
                cost_per_hour,
                currency: status.cost.as_ref().map(|c| c.currency.clone()),
                cost_so_far,
                expires_at: status.expires_at.clone(),
                created_at,
                namespace,
                name,
            }
        })
        .collect()
}

pub fn sort_rows(rows: &mut [Row], key: SortKey) {
    let by_name = |a: &Row, b: &Row| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name));
    match key {
        SortKey::Name => rows.sort_by(by_name),
        // Most expensive first; clusters without an estimate last.
        SortKey::Cost => rows.sort_by(|a, b| {
            let cost = |r: &Row| r.cost_so_far.unwrap_or(f64::NEG_INFINITY);
            cost(b).total_cmp(&cost(a)).then_with(|| by_name(a, b))
        }),
        // Soonest first; clusters that never expire last.
        SortKey::Expires => rows.sort_by(|a, b| {
            let at = |r: &Row| r.expires_at.as_ref().map(|t| t.0);
            match (at(a), at(b)) {
                (Some(x), Some(y)) => x.cmp(&y),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            }
            .then_with(|| by_name(a, b))
        }),
        // Oldest first.
        SortKey::Age => rows.sort_by(|a, b| {
            let at = |r: &Row| r.created_at.as_ref().map(|t| t.0);
            at(a).cmp(&at(b)).then_with(|| by_name(a, b))
        }),
    }
}

/// The table, kubectl-style: NAMESPACE only across namespaces, VERSION and REASON only when wide.
pub fn render(
    rows: &[Row],
    now: Timestamp,
    wide: bool,
    all_namespaces: bool,
    palette: Palette,
) -> String {
    let mut headers = vec![];
    if all_namespaces {
        headers.push("NAMESPACE");
    }
    headers.extend([
        "NAME",
        "PROVIDER",
        "PHASE",
        "READY",
        "TEMPLATE",
        "NODES",
        "RESOURCES",
        "COST/H",
        "COST",
        "EXPIRES IN",
        "AGE",
    ]);
    if wide {
        headers.extend(["VERSION", "REASON"]);
    }
    let since = |t: &Time| {
        crate::duration::human(Duration::from_secs(
            now.duration_since(t.0).as_secs().max(0) as u64,
        ))
    };
    let dash = || "-".to_string();
    let mut table = Table::new(&headers);
    for row in rows {
        let money = |amount: Option<f64>| match (amount, &row.currency) {
            (Some(amount), Some(currency)) => format!("{amount:.2} {currency}"),
            (Some(amount), None) => format!("{amount:.2}"),
            _ => dash(),
        };
        let expires_in = row.expires_at.as_ref().map_or_else(dash, |at| {
            let left = at.0.duration_since(now).as_secs();
            if left <= 0 {
                palette.status("expired")
            } else {
                crate::duration::human(Duration::from_secs(left as u64))
            }
        });
        let mut cells = vec![];
        if all_namespaces {
            cells.push(row.namespace.clone());
        }
        cells.extend([
            row.name.clone(),
            row.provider.clone().unwrap_or_else(dash),
            row.phase
                .as_deref()
                .map_or_else(dash, |p| palette.status(p)),
            row.ready
                .as_deref()
                .map_or_else(dash, |r| palette.status(r)),
            row.template.clone().unwrap_or_else(dash),
            format!("{}/{}", row.nodes_ready, row.nodes_desired),
            row.resources.to_string(),
            money(row.cost_per_hour),
            money(row.cost_so_far),
            expires_in,
            row.created_at.as_ref().map_or_else(dash, since),
        ]);
        if wide {
            cells.push(row.kubernetes_version.clone());
            cells.push(row.ready_reason.clone().unwrap_or_else(dash));
        }
        table.row(cells);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTERS: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: payments, namespace: team-a, creationTimestamp: "2026-11-24T06:00:00Z" }
spec:
  kubernetes: { version: v1.37.2 }
  infrastructure: { aws: { region: eu-central-1, credentialsSecretRef: { name: aws } } }
  template: { name: aws, revision: 3f2a9c1b7d4e }
status:
  phase: Provisioned
  provider: aws
  expiresAt: "2026-11-24T12:00:00Z"
  cost: { perHour: "0.42", currency: USD }
  conditions:
    - { type: Ready, status: "True", reason: Ready, message: "", lastTransitionTime: "2026-11-24T06:10:00Z" }
---
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: ci-1234, namespace: team-b, creationTimestamp: "2026-11-24T08:55:00Z" }
spec:
  kubernetes: { version: v1.36.0 }
  infrastructure: { sim: {} }
  template: { name: sim, revision: 9d0c11aa2b3c }
status:
  phase: Provisioning
  provider: sim
  expiresAt: "2026-11-24T09:25:00Z"
  conditions:
    - { type: Ready, status: "False", reason: WaitingForControlPlane, message: "", lastTransitionTime: "2026-11-24T08:55:00Z" }
---
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: legacy, namespace: team-a, creationTimestamp: "2026-11-01T09:00:00Z" }
spec:
  kubernetes: { version: v1.35.4 }
  infrastructure: { baremetal: { imageUrl: "http://10.0.0.1/node.img" } }
status:
  phase: Provisioned
  provider: baremetal
  cost: { perHour: "1.10", currency: EUR }
"#;

    const POOLS: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: payments-workers, namespace: team-a }
spec: { clusterName: payments, replicas: 3 }
status: { readyReplicas: 3 }
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: payments-gpu, namespace: team-a }
spec: { clusterName: payments, replicas: 2 }
status: { readyReplicas: 1 }
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: ci-1234-workers, namespace: team-b }
spec: { clusterName: ci-1234, replicas: 2 }
---
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: payments-workers, namespace: team-b }
spec: { clusterName: payments, replicas: 9 }
"#;

    fn rows(sort: SortKey) -> Vec<Row> {
        let clusters: Vec<Cluster> = serde_saphyr::from_multiple(CLUSTERS).unwrap();
        let pools: Vec<MachinePool> = serde_saphyr::from_multiple(POOLS).unwrap();
        let secrets = BTreeMap::from([(("team-a".to_string(), "payments".to_string()), 5)]);
        let mut rows = build_rows(&clusters, &pools, &secrets, now());
        sort_rows(&mut rows, sort);
        rows
    }

    fn now() -> Timestamp {
        "2026-11-24T09:00:00Z".parse().unwrap()
    }

    #[test]
    fn fleet_table_across_namespaces_sorted_by_cost() {
        let table = render(&rows(SortKey::Cost), now(), false, true, Palette::plain());
        insta::assert_snapshot!(table);
    }

    #[test]
    fn fleet_wide_table_sorted_by_expiry() {
        let table = render(
            &rows(SortKey::Expires),
            now(),
            true,
            false,
            Palette::plain(),
        );
        insta::assert_snapshot!(table);
    }

    #[test]
    fn nodes_and_resources_count_only_the_clusters_own_pools_and_secrets() {
        let rows = rows(SortKey::Name);
        let payments = rows.iter().find(|r| r.name == "payments").unwrap();
        assert_eq!((payments.nodes_ready, payments.nodes_desired), (4, 5));
        assert_eq!(payments.resources, 1 + 2 + 5);
        assert_eq!(
            payments.cost_so_far.map(|c| (c * 100.0).round()),
            Some(126.0)
        );
    }
}
