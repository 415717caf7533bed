//! Exit codes, kubectl-style: 0 when the command did what was asked, 1 when what was asked is not so (yet),
//! 2 for errors, 3 when the management cluster is not set up for Slipway. Scripts branch on them, so they are
//! part of the interface and documented in `--help` and the README.

use std::fmt;
use std::process::ExitCode;

/// The table printed at the end of `slipway --help`.
pub const CODES_HELP: &str = "\
Exit codes:
  0  success
  1  the cluster is not in the state asked for: `wait` timed out, `init --check` found Slipway not ready,
     `get kubeconfig` found no kubeconfig yet
  2  error: bad arguments, an unknown cluster, an API error
  3  not set up: no kubeconfig, or Slipway's CRDs are missing from the cluster (run `slipway init`)";

/// Exit code 1: the command worked, but the cluster is not (yet) in the state the user asked about.
#[derive(Debug)]
pub struct NotSatisfied(pub String);

/// Exit code 3: there is no management cluster to talk to, or Slipway is not installed in it.
#[derive(Debug)]
pub struct NotSetUp(pub String);

impl fmt::Display for NotSatisfied {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for NotSetUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotSatisfied {}
impl std::error::Error for NotSetUp {}

/// Prints the error, if any, and picks the exit code from its kind.
pub fn report(result: anyhow::Result<()>) -> ExitCode {
    let Err(error) = result else {
        return ExitCode::SUCCESS;
    };
    eprintln!("error: {error:#}");
    if error.downcast_ref::<NotSatisfied>().is_some() {
        ExitCode::from(1)
    } else if error.downcast_ref::<NotSetUp>().is_some() {
        ExitCode::from(3)
    } else {
        ExitCode::from(2)
    }
}
