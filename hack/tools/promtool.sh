#!/usr/bin/env bash
# Puts a promtool at <out> for the chart's alert and dashboard tests
# (test/chart): Debian's, from the prometheus package, extracted and not
# installed (no service, no user, no dependencies: only /usr/bin/promtool),
# where apt can download it; else built from Go modules (hack/tools/promtool,
# about 4 minutes of two cores cold: the largest tool of make test's cold
# build, docs/performance.md "Cold build").
#
#   hack/tools/promtool.sh <out>
set -euo pipefail

out="${1:?usage: promtool.sh <out>}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "${tmp}"' EXIT

if command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null; then
  if (cd "${tmp}" && { apt-get download -q prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get download -q prometheus >/dev/null 2>&1; }; }); then
    dpkg-deb -x "${tmp}"/prometheus_*.deb "${tmp}/root"
    if "${tmp}/root/usr/bin/promtool" --version >/dev/null 2>&1; then
      mkdir -p "$(dirname "${out}")"
      mv "${tmp}/root/usr/bin/promtool" "${out}"
      echo ">> promtool from Debian's prometheus package: $("${out}" --version 2>&1 | head -n1)" >&2
      exit 0
    fi
  fi
  echo ">> Debian's prometheus package is not available: building promtool from Go modules" >&2
fi
echo ">> building promtool from Go modules (first time only, ~2 min cold)" >&2
(cd "${here}/promtool" && CGO_ENABLED=0 go build -tags remove_all_sd -trimpath -gcflags=all=-dwarf=false -ldflags "-s -w" -o "${out}.tmp" github.com/prometheus/prometheus/cmd/promtool)
mv "${out}.tmp" "${out}"
