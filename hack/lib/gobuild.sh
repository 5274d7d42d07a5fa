# Sourced by hack/envtest/build.sh and hack/sim/build.sh.
#
# gobuild <out dir> <name> <module dir> <package> <ldflags>: builds package
# from the module in module dir into <out dir>/<name>, unless it is there.
gobuild() {
  local out="$1" name="$2" dir="$3" pkg="$4" ldflags="$5"
  if [[ -x "${out}/${name}" ]]; then
    return 0
  fi
  echo ">> building ${name} from Go modules into ${out} (first time only; a few minutes)" >&2
  local start=${SECONDS}
  (cd "${dir}" && CGO_ENABLED=0 go build -trimpath -ldflags "${ldflags}" -o "${out}/${name}.tmp" "${pkg}")
  mv "${out}/${name}.tmp" "${out}/${name}"
  echo ">> built ${name} in $((SECONDS - start))s" >&2
}
