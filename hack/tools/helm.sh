#!/usr/bin/env bash
# Builds the helm CLI the chart tests run, from hack/envtest/kube-apiserver's
# module: helm.sh/helm/v3 is pinned there, so that it is built with the
# control plane's Kubernetes libraries (the same minor as its own) and, in
# make test, in the control plane's `go build`, which compiles them once for
# all (docs/performance.md, "Cold build"). Alone, this builds only helm.
#
#   hack/tools/helm.sh <output-path>
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/gobuild.sh
source "${here}/../lib/gobuild.sh"
module="${here}/../envtest/kube-apiserver"
out="${1:?usage: helm.sh <output-path>}"
mkdir -p "$(dirname "${out}")"
out="$(cd "$(dirname "${out}")" && pwd)/$(basename "${out}")"

gobuilds "${module}" "-s -w $(helm_ldflags "${module}")" "${out}=helm.sh/helm/v3/cmd/helm"
