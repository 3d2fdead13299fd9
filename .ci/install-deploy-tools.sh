#!/usr/bin/env bash
# Install the tools tests/deploy needs; safe to run again (fast when everything is present).
#   kustomize  v5.8.1   go install from the Go module proxy  -> $TOOLS/bin/kustomize
#   checkov    3.3.30   PyPI, in its own virtualenv          -> $TOOLS/venv/bin/checkov
#   kubernetes-validate 1.37.0  PyPI, same virtualenv       -> $TOOLS/venv/bin/kubernetes-validate
#   promtool            Debian package `prometheus`          -> /usr/bin/promtool
# TOOLS = $COLDSTREAM_DEPLOY_TOOLS or <repo>/.cache/deploy-tools (git-ignored); tests/deploy
# looks there first, then on PATH. Needs: go, python3 (venv), apt-get (as root or via sudo).
set -euo pipefail

KUSTOMIZE_VERSION=v5.8.1
CHECKOV_VERSION=3.3.30
KUBERNETES_VALIDATE_VERSION=1.37.0

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tools="${COLDSTREAM_DEPLOY_TOOLS:-$repo/.cache/deploy-tools}"
mkdir -p "$tools/bin"

# kustomize (a Go program; built from the module proxy, no release binary download)
if [ -x "$tools/bin/kustomize" ] && "$tools/bin/kustomize" version 2>/dev/null | grep -qx "$KUSTOMIZE_VERSION"; then
  echo "kustomize: $KUSTOMIZE_VERSION present"
else
  command -v go >/dev/null || { echo "install-deploy-tools: go not found" >&2; exit 1; }
  echo "kustomize: go install sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  GOBIN="$tools/bin" GOFLAGS=-mod=mod go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
  "$tools/bin/kustomize" version
fi

# checkov + kubernetes-validate (own virtualenv: checkov pins many libraries)
venv="$tools/venv"
want="checkov==$CHECKOV_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
if [ -x "$venv/bin/checkov" ] && [ -x "$venv/bin/kubernetes-validate" ] \
   && [ "$(cat "$venv/.coldstream-tools" 2>/dev/null)" = "$want" ]; then
  echo "checkov, kubernetes-validate: present"
else
  echo "checkov, kubernetes-validate: pip install into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check $want
  echo "$want" > "$venv/.coldstream-tools"
fi

# promtool (Debian's prometheus package)
if command -v promtool >/dev/null; then
  echo "promtool: $(command -v promtool)"
else
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  echo "promtool: apt-get install prometheus"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  command -v promtool
fi
