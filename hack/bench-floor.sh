#!/usr/bin/env bash
# The floor alone (hack/bench-scale.sh runs it before every Slipway run): a fresh etcd + kube-apiserver
# (slipway-testenv) with Slipway's CRDs and no manager; bench-floor sends, for N sim clusters, exactly the writes a
# provisioner cannot avoid (2 creates, 2 finalizer patches, 4 PKI Secrets, 2 status applies per cluster) as fast as
# the apiserver accepts them and prints a markdown report: seconds until all are answered, writes per second,
# apiserver requests by verb and resource.
#   hack/bench-floor.sh N [bench-floor flags, e.g. --concurrency 64]
# Results and how to read them: docs/benchmarks.md.
set -euo pipefail

usage="usage: hack/bench-floor.sh N [bench-floor flags]   (N: how many clusters, e.g. 100 or 1000)"
clusters="${1:-}"
if [[ ! "$clusters" =~ ^[1-9][0-9]*$ ]]; then
  echo "$usage" >&2
  exit 2
fi
shift

# shellcheck source=hack/bench-env.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-env.sh"

print_header "hack/bench-floor.sh $clusters $*"
start_apiserver apiserver
"$bin/bench-floor" --clusters "$clusters" --kubeconfig "$kubeconfig" "$@"
