# Sourced by hack/envtest/build.sh and hack/sim/build.sh.
#
# gobuild <out dir> <name> <module dir> <package> <ldflags>: builds package
# from the module in module dir into <out dir>/<name>, unless it is there.
gobuild() {
  gobuilds "$3" "$5" "$1/$2=$4"
}

# binary_name <package>: the name go build gives the package's executable:
# its last path element, or the one before a major version suffix
# (go.etcd.io/etcd/server/v3: server).
binary_name() {
  local pkg="$1" last="${1##*/}"
  if [[ "${last}" =~ ^v[0-9]+$ ]]; then
    pkg="${pkg%/*}"
    last="${pkg##*/}"
  fi
  echo "${last}"
}

# gobuilds <module dir> <ldflags> <out path>=<package> ...: builds the main
# packages of one module in one `go build`, each into its out path (named
# after the package: kube-apiserver, kube-scheduler, ...), skipping those
# already there. One invocation compiles the packages they share once and
# runs their link steps, each on one core, side by side.
gobuilds() {
  local dir="$1" ldflags="$2"
  shift 2
  local pkgs=() outs=() spec
  for spec in "$@"; do
    [[ -x "${spec%%=*}" ]] && continue
    outs+=("${spec%%=*}")
    pkgs+=("${spec#*=}")
  done
  (( ${#pkgs[@]} > 0 )) || return 0
  local names="${outs[*]##*/}"
  echo ">> building ${names} from Go modules into $(dirname "${outs[0]}") (first time only; a few minutes)" >&2
  local start=${SECONDS} tmp i
  mkdir -p "$(dirname "${outs[0]}")"
  tmp="$(mktemp -d "$(dirname "${outs[0]}")/.build.XXXXXX")"
  # -dwarf=false: the binaries are linked without DWARF (-w), so the
  # compiler's is work thrown away (the Makefile's TOOL_GCFLAGS).
  (cd "${dir}" && CGO_ENABLED=0 go build -trimpath -gcflags=all=-dwarf=false -ldflags "${ldflags}" -o "${tmp}/" "${pkgs[@]}")
  for i in "${!pkgs[@]}"; do
    mkdir -p "$(dirname "${outs[$i]}")"
    mv "${tmp}/$(binary_name "${pkgs[$i]}")" "${outs[$i]}"
  done
  rmdir "${tmp}"
  echo ">> built ${names} in $((SECONDS - start))s" >&2
}

# k8s_ldflags <module dir>: the linker flags of a Kubernetes binary built
# from the module (k8s.io/kubernetes at its version): no symbols, no DWARF,
# and the version the binary reports.
k8s_ldflags() {
  local version minor
  version="$(awk '$1 == "k8s.io/kubernetes" { print $2 } $2 == "k8s.io/kubernetes" { print $3 }' "$1/go.mod" | head -n1)"
  [[ -n "${version}" ]] || { echo "k8s_ldflags: cannot read the Kubernetes version in $1/go.mod" >&2; return 1; }
  minor="${version#v1.}"
  minor="${minor%%.*}"
  echo "-s -w -X k8s.io/component-base/version.gitVersion=${version} -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${minor}"
}

# helm_ldflags <module dir>: the -X linker flags of helm built from the
# module (helm.sh/helm/v3 at its version, with the module's Kubernetes
# libraries): the version it reports and the Kubernetes version `helm template` and
# `helm lint` assume by default, its client-go's, as Helm's own Makefile sets
# them.
helm_ldflags() {
  local version k8s minor p flags
  version="$(awk '$1 == "helm.sh/helm/v3" { print $2 } $2 == "helm.sh/helm/v3" { print $3 }' "$1/go.mod" | head -n1)"
  k8s="$(awk '$1 == "k8s.io/kubernetes" { print $2 } $2 == "k8s.io/kubernetes" { print $3 }' "$1/go.mod" | head -n1)"
  [[ -n "${version}" && -n "${k8s}" ]] || { echo "helm_ldflags: cannot read helm's and Kubernetes' versions in $1/go.mod" >&2; return 1; }
  minor="${k8s#v1.}"
  minor="${minor%%.*}"
  flags="-X helm.sh/helm/v3/internal/version.version=${version}"
  for p in chartutil lint/rules; do
    flags+=" -X helm.sh/helm/v3/pkg/${p}.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/${p}.k8sVersionMinor=${minor}"
  done
  echo "${flags}"
}
