#!/usr/bin/env bash
# Builds the kustomize base and every overlay and checks each object against the Kubernetes
# schemas (kubernetes-validate, strict: unknown fields fail), offline. A broken manifest
# fails this script, and CI runs it (.ci/run). Needs kubectl (with kustomize) and python3
# with venv; kubernetes-validate is installed, pinned, into a venv in the cargo target folder.
#
#   deploy/kubernetes/validate.sh                        # Kubernetes 1.32 schemas
#   RUNWAY_KUBERNETES_VERSION=1.30 deploy/kubernetes/validate.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

KUBERNETES_VALIDATE=1.37.0
VERSION=${RUNWAY_KUBERNETES_VERSION:-1.32}
say() { printf 'kubernetes: %s\n' "$*"; }

command -v kubectl >/dev/null || { say "kubectl is not installed (it brings kustomize)"; exit 1; }
# `labels`, `replicas` and target patches need kustomize 4 or later (kubectl 1.21+).
kustomize=$(kubectl version --client 2>/dev/null | sed -n 's/^Kustomize Version: v\([0-9]*\).*/\1/p')
if [ -z "$kustomize" ] || [ "$kustomize" -lt 4 ]; then
  say "kubectl's kustomize is ${kustomize:-unknown}; these manifests need kustomize 4 or later (kubectl 1.21+)"
  exit 1
fi
target=${CARGO_TARGET_DIR:-target}
venv=$target/kubernetes-venv
# Read whole before matching: `grep -q` would stop early and, with pipefail, fail the pipe.
installed=$("$venv/bin/pip" show kubernetes-validate 2>/dev/null || true)
if ! grep -qx "Version: $KUBERNETES_VALIDATE" <<<"$installed"; then
  say "installing kubernetes-validate $KUBERNETES_VALIDATE into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "kubernetes-validate==$KUBERNETES_VALIDATE"
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
for dir in deploy/kubernetes/base deploy/kubernetes/overlays/*/; do
  dir=${dir%/}
  out="$work/$(echo "$dir" | tr / _).yaml"
  if ! kubectl kustomize "$dir" >"$out"; then
    say "$dir: kustomize failed"
    failed=1
    continue
  fi
  if "$venv/bin/kubernetes-validate" --strict --kubernetes-version "$VERSION" "$out"; then
    say "$dir: $(grep -c '^kind:' "$out") objects valid for Kubernetes $VERSION"
  else
    say "$dir: invalid for Kubernetes $VERSION"
    failed=1
  fi
done
exit $failed
