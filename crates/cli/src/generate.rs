//! `slipway generate cluster NAME`: a Cluster and its worker MachinePool as YAML, ready for `kubectl apply -f -`,
//! rendered from a template (see [`crate::template`]) and stamped with the template's name, revision and values in
//! `spec.template`, so that later one can tell which clusters came from which blueprint.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use serde_json::{Value, json};

use crate::output::Table;
use crate::template::{BUILT_IN, Template};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a Cluster and its worker MachinePool as YAML.
    #[command(after_help = "Examples:
  slipway generate cluster demo --provider sim --workers 3 | kubectl apply -f -
  slipway generate cluster edge --provider baremetal --set BAREMETAL_IMAGE_URL=http://10.0.0.1/node.img
  slipway generate cluster --list-templates")]
    Cluster(ClusterArgs),
}

#[derive(clap::Args)]
pub struct ClusterArgs {
    /// Name of the Cluster (its worker pool is NAME-workers).
    #[arg(required_unless_present = "list_templates")]
    name: Option<String>,
    /// Which built-in template to render: one per provider.
    #[arg(long, value_enum, default_value = "local", conflicts_with = "template")]
    provider: Provider,
    /// Kubernetes version, e.g. v1.37.2 (the template's KUBERNETES_VERSION).
    #[arg(long, value_name = "VERSION")]
    kubernetes_version: Option<String>,
    /// Control plane machines: 1, 3 or 5 (CONTROL_PLANE_MACHINE_COUNT).
    #[arg(long, value_name = "N")]
    control_plane: Option<u32>,
    /// Worker machines (WORKER_MACHINE_COUNT).
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
    /// Delete the cluster this long after creation, e.g. 8h (TTL).
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Render this template file instead of a built-in one.
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// Set a template variable; repeatable. Wins over the flags above.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// List the built-in templates and exit.
    #[arg(long)]
    list_templates: bool,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum Provider {
    Local,
    Aws,
    Baremetal,
    Sim,
}

impl Provider {
    fn template_name(self) -> &'static str {
        match self {
            Provider::Local => "local",
            Provider::Aws => "aws",
            Provider::Baremetal => "baremetal",
            Provider::Sim => "sim",
        }
    }
}

pub fn run(command: Command) -> anyhow::Result<()> {
    let Command::Cluster(args) = command;
    if args.list_templates {
        print!("{}", list_templates()?);
        return Ok(());
    }
    print!("{}", generate_cluster(&args)?);
    Ok(())
}

fn list_templates() -> anyhow::Result<String> {
    let mut table = Table::new(&["NAME", "REVISION", "DESCRIPTION"]);
    for (name, _) in BUILT_IN {
        let template = Template::built_in(name)?;
        table.row(vec![template.name, template.revision, template.description]);
    }
    Ok(table.render())
}

fn generate_cluster(args: &ClusterArgs) -> anyhow::Result<String> {
    let template = match &args.template {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the template {}", path.display()))?;
            Template::parse(&text).with_context(|| format!("template {}", path.display()))?
        }
        None => Template::built_in(args.provider.template_name())?,
    };
    let rendered = template.render(&variables(args)?)?;
    let mut out = String::new();
    for mut document in rendered.documents {
        if document["kind"] == "Cluster" {
            document["spec"]["template"] = json!({
                "name": template.name,
                "revision": template.revision,
                "variables": rendered.values,
            });
            check_parses::<slipway_api::Cluster>(&document)?;
        } else if document["kind"] == "MachinePool" {
            check_parses::<slipway_api::MachinePool>(&document)?;
        }
        if !out.is_empty() {
            out.push_str("---\n");
        }
        out.push_str(&serde_saphyr::to_string(&document)?);
    }
    Ok(out)
}

/// The values given on the command line: the name, the convenience flags, then every `--set`.
fn variables(args: &ClusterArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let mut values = BTreeMap::new();
    let name = args.name.clone().context("give the cluster a name")?;
    values.insert("CLUSTER_NAME".to_string(), name);
    let flags = [
        ("KUBERNETES_VERSION", args.kubernetes_version.clone()),
        (
            "CONTROL_PLANE_MACHINE_COUNT",
            args.control_plane.map(|n| n.to_string()),
        ),
        ("WORKER_MACHINE_COUNT", args.workers.map(|n| n.to_string())),
        ("TTL", args.ttl.clone()),
    ];
    for (key, value) in flags {
        if let Some(value) = value {
            values.insert(key.to_string(), value);
        }
    }
    for pair in &args.set {
        let Some((key, value)) = pair.split_once('=') else {
            bail!("--set {pair:?}: write it as KEY=VALUE, e.g. --set WORKER_MACHINE_COUNT=3");
        };
        values.insert(key.to_string(), value.to_string());
    }
    Ok(values)
}

/// Catches a template that renders something the API types cannot hold (a string where a number goes) here, with
/// the template named, rather than at `kubectl apply`.
fn check_parses<K: serde::de::DeserializeOwned>(document: &Value) -> anyhow::Result<()> {
    serde_json::from_value::<K>(document.clone())
        .map(|_| ())
        .with_context(|| {
            format!(
                "the template renders a {} that is not valid",
                document["kind"].as_str().unwrap_or("document")
            )
        })
}
