//! Which management cluster a command talks to: the user's kubeconfig (`--kubeconfig`, else every file in
//! `KUBECONFIG`, else `~/.kube/config`), its current context or `--context`, and its namespace or `-n`, the way
//! kubectl chooses them. Inside a pod without a kubeconfig, the pod's service account.

use std::path::PathBuf;

use anyhow::Context as _;
use kube::config::{KubeConfigOptions, Kubeconfig, KubeconfigError};
use kube::{Client, Config};

use crate::exit::NotSetUp;

/// The flags every command that talks to the management cluster takes.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ContextArgs {
    /// Kubeconfig file of the management cluster (default: $KUBECONFIG, then ~/.kube/config).
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace of the clusters (default: the context's namespace, else `default`).
    #[arg(short = 'n', long, value_name = "NAME")]
    pub namespace: Option<String>,
}

/// A client for the management cluster and the namespace commands act in.
pub struct Session {
    pub client: Client,
    pub namespace: String,
    /// The apiserver's URL, for messages.
    pub server: String,
}

impl ContextArgs {
    /// Connects and checks that Slipway's API is served, so a missing install is reported as such (with the fix)
    /// rather than as "the server could not find the requested resource" on the first list.
    pub async fn connect(&self) -> anyhow::Result<Session> {
        let session = self.connect_without_slipway().await?;
        ensure_slipway_api(&session).await?;
        Ok(session)
    }

    /// Connects without looking for Slipway's API: for `slipway init`, which installs it.
    pub async fn connect_without_slipway(&self) -> anyhow::Result<Session> {
        let config = self.config().await?;
        let namespace = self
            .namespace
            .clone()
            .unwrap_or_else(|| config.default_namespace.clone());
        let server = config
            .cluster_url
            .to_string()
            .trim_end_matches('/')
            .to_string();
        let client =
            Client::try_from(config).context("building a client for the management cluster")?;
        Ok(Session {
            client,
            namespace,
            server,
        })
    }

    async fn config(&self) -> anyhow::Result<Config> {
        let options = KubeConfigOptions {
            context: self.context.clone(),
            cluster: None,
            user: None,
        };
        let kubeconfig = match &self.kubeconfig {
            Some(path) => Kubeconfig::read_from(path).map_err(|e| {
                anyhow::Error::new(NotSetUp(format!(
                    "cannot read the kubeconfig {}: {e}",
                    path.display()
                )))
            })?,
            None => match Kubeconfig::read() {
                Ok(kubeconfig) => kubeconfig,
                Err(KubeconfigError::FindPath | KubeconfigError::ReadConfig(..))
                    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() =>
                {
                    return Config::incluster()
                        .context("reading the in-cluster service account config");
                }
                Err(error) => return Err(no_kubeconfig(error)),
            },
        };
        Config::from_custom_kubeconfig(kubeconfig, &options)
            .await
            .map_err(|e| match (&self.context, e) {
                (Some(context), KubeconfigError::LoadContext(_)) => anyhow::Error::new(NotSetUp(
                    format!("the kubeconfig has no context named {context:?}; list them with `kubectl config get-contexts`"),
                )),
                (None, KubeconfigError::CurrentContextNotSet) => anyhow::Error::new(NotSetUp(
                    "the kubeconfig has no current context: choose one with --context or `kubectl config use-context`".into(),
                )),
                (_, e) => anyhow::Error::new(e).context("loading the kubeconfig"),
            })
    }
}

fn no_kubeconfig(error: KubeconfigError) -> anyhow::Error {
    anyhow::Error::new(NotSetUp(format!(
        "no kubeconfig for a management cluster ({error}): point --kubeconfig or KUBECONFIG at one; \
         if Slipway is not installed there yet, run `slipway init` against it first"
    )))
}

/// Fails with [`NotSetUp`] when the apiserver does not serve `slipway.dev/v1alpha1`, and with a readable error when
/// the apiserver cannot be reached at all.
async fn ensure_slipway_api(session: &Session) -> anyhow::Result<()> {
    let group_version = format!("{}/{}", slipway_api::GROUP, slipway_api::VERSION);
    match session
        .client
        .list_api_group_resources(&group_version)
        .await
    {
        Ok(resources) if resources.resources.iter().any(|r| r.name == "clusters") => Ok(()),
        Ok(_) => Err(not_installed(session)),
        Err(kube::Error::Api(status)) if status.code == 404 => Err(not_installed(session)),
        Err(error) => Err(anyhow::Error::new(error).context(format!(
            "cannot reach the management cluster at {} (check the kubeconfig's context, or pass --context)",
            session.server
        ))),
    }
}

fn not_installed(session: &Session) -> anyhow::Error {
    anyhow::Error::new(NotSetUp(format!(
        "Slipway is not installed in the management cluster at {}: its CRDs (clusters.{}) are missing; \
         run `slipway init` to install them",
        session.server,
        slipway_api::GROUP
    )))
}
