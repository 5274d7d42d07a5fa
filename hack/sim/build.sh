#!/usr/bin/env bash
# Builds the simulated cluster's processes from Go modules (no container
# engine, no downloads but the module proxy): kube-controller-manager and
# kube-scheduler from k8s.io/kubernetes at the envtest kube-apiserver's
# version, and kwok from sigs.k8s.io/kwok, all from
# hack/envtest/kube-apiserver's module (kwok with the control plane's
# Kubernetes libraries). make builds them in hack/envtest/build.sh's go
# build; this builds what is missing and writes kwok's stages.
#
#   hack/sim/build.sh <output-dir>
#
# Built once into <output-dir>, whose name carries the versions, and reused.
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
  "${out}/kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager" \
  "${out}/kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler" \
  "${out}/kwok=sigs.k8s.io/kwok/cmd/kwok"

# kwok needs its stages (what a fake kubelet does to Nodes and Pods) in its
# configuration: kwok's own default stages of the same version, as kwokctl
# bundles them: nodes initialized and heartbeating through Leases (their
# status every 10 minutes, as a kubelet's every 5), pods Running and Ready.
if [[ ! -s "${out}/kwok-stages.yaml" ]]; then
  kwok_dir="$(cd "${k8s_module}" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)"
  stages="${kwok_dir}/kustomize/stage"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    echo "---"
    cat "${stages}/${f}"
  done > "${out}/kwok-stages.yaml.tmp"
  mv "${out}/kwok-stages.yaml.tmp" "${out}/kwok-stages.yaml"
fi
echo "${out}"
