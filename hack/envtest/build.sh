#!/usr/bin/env bash
# Builds the envtest control plane (kube-apiserver + etcd) from Go modules,
# because prebuilt envtest binaries cannot be downloaded in this environment.
#
#   hack/envtest/build.sh <output-dir> [<sim-output-dir> [<node-output-dir> [<helm>]]]
#
# The binaries are built once into <output-dir> and reused afterwards; the
# directory name carries the versions so that a version bump rebuilds.
# The versions come from the go.mod files next to this script. With
# <sim-output-dir>, kube-controller-manager, kube-scheduler and kwok (the
# simulated cluster's, hack/sim/build.sh) are built there in the same
# `go build` as kube-apiserver: the packages the four share (most of
# k8s.io/kubernetes and its libraries) compile once, and their links run
# side by side. With <node-output-dir>, the real node's kubelet and
# kube-proxy too (hack/node/build.sh). With <helm>, the helm CLI the chart
# tests run (hack/tools/helm.sh), built with these Kubernetes libraries.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=../lib/gobuild.sh
source "${here}/../lib/gobuild.sh"
out="${1:?usage: build.sh <output-dir> [<sim-output-dir>]}"
sim_out="${2:-}"
node_out="${3:-}"
helm_out="${4:-}"
mkdir -p "${out}"
out="$(cd "${out}" && pwd)"

k8s_version="$(awk '$1 == "k8s.io/kubernetes" { print $2 } $2 == "k8s.io/kubernetes" { print $3 }' "${here}/kube-apiserver/go.mod" | head -n1)"
etcd_version="$(awk '$1 == "go.etcd.io/etcd/server/v3" { print $2 } $2 == "go.etcd.io/etcd/server/v3" { print $3 }' "${here}/etcd/go.mod" | head -n1)"
[[ -n "${k8s_version}" && -n "${etcd_version}" ]] || { echo "build.sh: cannot read versions from go.mod" >&2; exit 1; }

build() { gobuild "${out}" "$@"; }

# Independent builds; run them side by side.
build etcd "${here}/etcd" go.etcd.io/etcd/server/v3 "-s -w" &
etcd_pid=$!
k8s=("${out}/kube-apiserver=k8s.io/kubernetes/cmd/kube-apiserver")
if [[ -n "${node_out}" ]]; then
  mkdir -p "${node_out}"
  k8s+=("$(cd "${node_out}" && pwd)/kubelet=k8s.io/kubernetes/cmd/kubelet"
        "$(cd "${node_out}" && pwd)/kube-proxy=k8s.io/kubernetes/cmd/kube-proxy")
fi
if [[ -n "${sim_out}" ]]; then
  k8s+=("${sim_out}/kube-controller-manager=k8s.io/kubernetes/cmd/kube-controller-manager"
        "${sim_out}/kube-scheduler=k8s.io/kubernetes/cmd/kube-scheduler"
        "${sim_out}/kwok=sigs.k8s.io/kwok/cmd/kwok")
fi
ldflags="$(k8s_ldflags "${here}/kube-apiserver")"
if [[ -n "${helm_out}" ]]; then
  mkdir -p "$(dirname "${helm_out}")"
  k8s+=("$(cd "$(dirname "${helm_out}")" && pwd)/$(basename "${helm_out}")=helm.sh/helm/v3/cmd/helm")
  # One go build links every binary with the same flags: helm's -X flags
  # name its own packages, which the others do not have.
  ldflags+=" $(helm_ldflags "${here}/kube-apiserver")"
fi
gobuilds "${here}/kube-apiserver" "${ldflags}" "${k8s[@]}"
wait "${etcd_pid}"
echo "${out}"
