#!/usr/bin/env bash
# Builds the real node's kubelet and kube-proxy from Go modules: k8s.io/kubernetes at the
# envtest kube-apiserver's version (hack/envtest/kube-apiserver's module,
# which make test has compiled the shared packages of).
#
#   hack/node/build.sh <output-dir>
#
# Built once into <output-dir>, whose name carries the version, and reused.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/gobuild.sh
source "${here}/../lib/gobuild.sh"
k8s_module="${here}/../envtest/kube-apiserver"
out="${1:?usage: build.sh <output-dir>}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"

k8s_ldflags="$(k8s_ldflags "${k8s_module}")"
gobuilds "${k8s_module}" "${k8s_ldflags}" \
  "${out}/kubelet=k8s.io/kubernetes/cmd/kubelet" \
  "${out}/kube-proxy=k8s.io/kubernetes/cmd/kube-proxy"
echo "${out}"
