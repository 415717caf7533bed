//! `slipway describe cluster NAME`: the cluster as a tree a person reads top to bottom, the way the controller
//! builds it: infrastructure, control plane, each MachinePool with its machines, add-ons; each line with its Ready
//! status, the reason, how long it has been so, and the message.

use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;
use slipway_api::conditions::{
    self, ADDONS_READY, CONTROL_PLANE_READY, INFRASTRUCTURE_READY, READY,
};
use slipway_api::{AddonBundle, Cluster, Condition, MachinePhase, MachinePool, MachineStatus};

use crate::kube_context::ContextArgs;
use crate::output::{self, Format, Palette, Table};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Show a cluster as a tree: infrastructure, control plane, pools and machines, add-ons.
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Name of the Cluster.
    name: String,
    #[command(flatten)]
    context: ContextArgs,
    /// Print the tree as JSON or YAML instead of a table.
    #[arg(short = 'o', long, value_enum)]
    output: Option<Format>,
    /// Also list every condition of the Cluster and of each MachinePool, not just the summary.
    #[arg(long, value_enum, value_name = "WHICH")]
    show_conditions: Option<ShowConditions>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ShowConditions {
    /// The Cluster's and every MachinePool's conditions.
    All,
    /// The Cluster's conditions only.
    Cluster,
    /// Each MachinePool's conditions only.
    MachinePool,
}

/// One line of the tree.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub kind: String,
    pub name: String,
    /// `True`, `False` or `Unknown`; absent while the controller has not said.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ready: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// When `ready` last changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

impl Node {
    fn new(kind: &str, name: impl Into<String>) -> Self {
        Node {
            kind: kind.to_string(),
            name: name.into(),
            ready: None,
            reason: None,
            message: None,
            last_transition_time: None,
            children: Vec::new(),
        }
    }

    /// Takes ready, reason, message and time from the condition of type `type_`, if there is one yet.
    fn with_condition(mut self, conditions: &[Condition], type_: &str) -> Self {
        if let Some(condition) = conditions::find(conditions, type_) {
            self.ready = Some(condition.status.clone());
            self.reason = Some(condition.reason.clone()).filter(|r| !r.is_empty());
            self.message = Some(condition.message.clone()).filter(|m| !m.is_empty());
            self.last_transition_time = Some(condition.last_transition_time.clone());
        }
        self
    }

    fn condition(condition: &Condition) -> Self {
        Node::new("Condition", &condition.type_)
            .with_condition(std::slice::from_ref(condition), &condition.type_)
    }
}

pub async fn run(command: Command) -> anyhow::Result<()> {
    let Command::Cluster(args) = command;
    let session = args.context.connect().await?;
    let clusters: Api<Cluster> = Api::namespaced(session.client.clone(), &session.namespace);
    let cluster = clusters
        .get_opt(&args.name)
        .await
        .with_context(|| format!("reading Cluster {}", args.name))?
        .with_context(|| {
            format!(
                "Cluster {} not found in namespace {} (list them with `slipway fleet -n {}`)",
                args.name, session.namespace, session.namespace
            )
        })?;
    let pools = Api::<MachinePool>::namespaced(session.client.clone(), &session.namespace)
        .list(&ListParams::default().fields(&format!("spec.clusterName={}", args.name)))
        .await
        .context("listing the cluster's MachinePools")?
        .items;
    // Add-ons are optional context: a user who may not list AddonBundles still gets the rest of the tree.
    let bundles = Api::<AddonBundle>::namespaced(session.client.clone(), &session.namespace)
        .list(&ListParams::default())
        .await
        .map(|list| list.items)
        .unwrap_or_default();
    let tree = build_tree(&cluster, &pools, &bundles, args.show_conditions);
    match args.output {
        Some(format) => output::print_structured(&tree, format),
        None => {
            print!("{}", render(&tree, Timestamp::now(), Palette::for_stdout()));
            Ok(())
        }
    }
}

/// The tree of one cluster, from the objects alone (no API calls), so that tests can build it from fixtures.
pub fn build_tree(
    cluster: &Cluster,
    pools: &[MachinePool],
    bundles: &[AddonBundle],
    show: Option<ShowConditions>,
) -> Node {
    let status = cluster.status.clone().unwrap_or_default();
    let conditions = &status.conditions;
    let mut root = Node::new("Cluster", cluster.name_any()).with_condition(conditions, READY);
    if matches!(show, Some(ShowConditions::All | ShowConditions::Cluster)) {
        root.children.extend(conditions.iter().map(Node::condition));
    }

    let provider = cluster
        .spec
        .infrastructure
        .provider_name()
        .unwrap_or("unknown");
    root.children.push(
        Node::new("Infrastructure", provider).with_condition(conditions, INFRASTRUCTURE_READY),
    );
    let replicas = cluster.spec.control_plane.replicas;
    let mut control_plane = Node::new(
        "ControlPlane",
        format!(
            "{} ({replicas} machine{})",
            cluster.name_any(),
            if replicas == 1 { "" } else { "s" }
        ),
    )
    .with_condition(conditions, CONTROL_PLANE_READY);
    if let Some(endpoint) = &status.control_plane_endpoint
        && control_plane.message.is_none()
    {
        control_plane.message = Some(format!("https://{}:{}", endpoint.host, endpoint.port));
    }
    root.children.push(control_plane);

    let mut pools: Vec<&MachinePool> = pools.iter().collect();
    pools.sort_by_key(|p| p.name_any());
    for pool in pools {
        root.children.push(pool_node(pool, show));
    }

    let mut addons =
        Node::new("Addons", cluster.name_any()).with_condition(conditions, ADDONS_READY);
    let mut bundles: Vec<&AddonBundle> = bundles.iter().collect();
    bundles.sort_by_key(|b| (b.spec.order, b.name_any()));
    for bundle in bundles {
        let on_this_cluster = bundle
            .status
            .as_ref()
            .and_then(|s| s.clusters.iter().find(|c| c.cluster == cluster.name_any()));
        if let Some(state) = on_this_cluster {
            let mut node = Node::new("AddonBundle", bundle.name_any());
            node.ready = Some(if state.ready { "True" } else { "False" }.to_string());
            node.reason = state.revision.clone().map(|r| format!("Revision {r}"));
            node.message = state.message.clone();
            addons.children.push(node);
        }
    }
    root.children.push(addons);
    root
}

fn pool_node(pool: &MachinePool, show: Option<ShowConditions>) -> Node {
    let status = pool.status.clone().unwrap_or_default();
    let mut node = Node::new(
        "MachinePool",
        format!(
            "{} ({}/{} ready)",
            pool.name_any(),
            status.ready_replicas,
            pool.spec.replicas
        ),
    )
    .with_condition(&status.conditions, READY);
    if matches!(
        show,
        Some(ShowConditions::All | ShowConditions::MachinePool)
    ) {
        node.children
            .extend(status.conditions.iter().map(Node::condition));
    }
    let mut machines = status.machines.clone();
    machines.sort_by(|a, b| a.name.cmp(&b.name));
    node.children.extend(machines.iter().map(machine_node));
    node
}

/// Machines carry no conditions: the phase is the reason, the provider id the message. A machine is ready when it
/// runs and, once it has registered, its Node is Ready, as the pool's readyReplicas counts it (sim machines never
/// get a Node). The machine's Node is a row under it: its name, whether it is Ready, and (in AGE) how long ago it
/// registered.
fn machine_node(machine: &MachineStatus) -> Node {
    let mut node = Node::new("Machine", &machine.name);
    let ready =
        machine.phase == MachinePhase::Running && machine.node_ref.as_ref().is_none_or(|n| n.ready);
    node.ready = Some(if ready { "True" } else { "False" }.to_string());
    node.reason = Some(format!("{:?}", machine.phase));
    node.message = machine.provider_id.clone();
    if let Some(node_ref) = &machine.node_ref {
        let mut row = Node::new("Node", &node_ref.name);
        row.ready = Some(if node_ref.ready { "True" } else { "False" }.to_string());
        row.last_transition_time = node_ref.created.clone();
        node.children.push(row);
    }
    node
}

/// The tree as a table: NAME (indented with tree lines), READY, REASON, AGE (since the status last changed; for a
/// Node, since it registered), MESSAGE. `now` is a parameter so that tests pin it.
pub fn render(tree: &Node, now: Timestamp, palette: Palette) -> String {
    let mut table = Table::new(&["NAME", "READY", "REASON", "AGE", "MESSAGE"]);
    add_rows(&mut table, tree, "", "", now, palette);
    table.render()
}

fn add_rows(
    table: &mut Table,
    node: &Node,
    prefix: &str,
    child_prefix: &str,
    now: Timestamp,
    palette: Palette,
) {
    let label = if node.kind == "Condition" {
        palette.dim(&node.name)
    } else {
        format!("{}/{}", node.kind, node.name)
    };
    let age = node
        .last_transition_time
        .as_ref()
        .map(|t| {
            let seconds = now.duration_since(t.0).as_secs().max(0) as u64;
            crate::duration::human(Duration::from_secs(seconds))
        })
        .unwrap_or_else(|| "-".into());
    table.row(vec![
        format!("{prefix}{label}"),
        node.ready
            .as_deref()
            .map(|r| palette.status(r))
            .unwrap_or_else(|| "-".into()),
        node.reason.clone().unwrap_or_else(|| "-".into()),
        age,
        node.message.clone().unwrap_or_default(),
    ]);
    let last = node.children.len().saturating_sub(1);
    for (i, child) in node.children.iter().enumerate() {
        let (branch, continuation) = if i == last {
            ("└─", "  ")
        } else {
            ("├─", "│ ")
        };
        add_rows(
            table,
            child,
            &format!("{child_prefix}{branch}"),
            &format!("{child_prefix}{continuation}"),
            now,
            palette,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLUSTER: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: Cluster
metadata: { name: demo, namespace: team-a }
spec:
  kubernetes: { version: v1.37.2 }
  controlPlane: { replicas: 3 }
  infrastructure: { sim: {} }
status:
  phase: Provisioned
  provider: sim
  controlPlaneEndpoint: { host: demo.sim.invalid, port: 6443 }
  conditions:
    - { type: InfrastructureReady, status: "True", reason: Provisioned, message: "", lastTransitionTime: "2026-11-24T09:00:00Z" }
    - { type: ControlPlaneReady, status: "True", reason: Running, message: "", lastTransitionTime: "2026-11-24T09:01:30Z" }
    - { type: NodesReady, status: "False", reason: WaitingForNodes, message: "pool demo-workers: 1 of 2 ready", lastTransitionTime: "2026-11-24T09:02:00Z" }
    - { type: AddonsReady, status: "True", reason: Applied, message: "", lastTransitionTime: "2026-11-24T09:02:10Z" }
    - { type: Ready, status: "False", reason: WaitingForNodes, message: "pool demo-workers: 1 of 2 ready", lastTransitionTime: "2026-11-24T09:00:00Z" }
"#;

    const POOL: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: MachinePool
metadata: { name: demo-workers, namespace: team-a }
spec: { clusterName: demo, replicas: 2 }
status:
  replicas: 2
  readyReplicas: 1
  machines:
    - { name: demo-workers-b, phase: Provisioning, providerID: "sim://demo-workers-b" }
    - { name: demo-workers-a, phase: Running, providerID: "local://team-a/demo/demo-workers-a", nodeRef: { name: demo-workers-a, ready: true, created: "2026-11-24T09:01:00Z" } }
  conditions:
    - { type: Ready, status: "False", reason: ScalingUp, message: "1 of 2 machines ready", lastTransitionTime: "2026-11-24T09:02:00Z" }
    - { type: ScalingUp, status: "True", reason: Creating, message: "creating demo-workers-b", lastTransitionTime: "2026-11-24T09:02:00Z" }
"#;

    const BUNDLE: &str = r#"
apiVersion: slipway.dev/v1alpha1
kind: AddonBundle
metadata: { name: cni, namespace: team-a }
spec:
  order: 10
  source: { inline: "" }
status:
  clusters:
    - { cluster: demo, revision: 3f2a9c, ready: true }
    - { cluster: other, revision: 3f2a9c, ready: false, message: "not this one" }
"#;

    fn fixtures() -> (Cluster, MachinePool, AddonBundle) {
        (
            serde_saphyr::from_str(CLUSTER).unwrap(),
            serde_saphyr::from_str(POOL).unwrap(),
            serde_saphyr::from_str(BUNDLE).unwrap(),
        )
    }

    fn now() -> Timestamp {
        "2026-11-24T09:05:00Z".parse().unwrap()
    }

    #[test]
    fn describe_shows_the_cluster_as_a_tree_with_machines_under_their_pool() {
        let (cluster, pool, bundle) = fixtures();
        let tree = build_tree(&cluster, &[pool], &[bundle], None);
        insta::assert_snapshot!(render(&tree, now(), Palette::plain()));
    }

    #[test]
    fn show_conditions_all_lists_every_condition_under_its_object() {
        let (cluster, pool, bundle) = fixtures();
        let tree = build_tree(&cluster, &[pool], &[bundle], Some(ShowConditions::All));
        insta::assert_snapshot!(render(&tree, now(), Palette::plain()));
    }
}
