#!/usr/bin/env bash
# The Python 3.8 venv (.venv38) that tests/test_python38_device.py runs the device side in: JetPack 5's Python.
# Holds `.[device]` plus the test tools only (no torch). Safe to run again: pip runs only when the venv is
# missing, broken, or pyproject.toml changed since it was filled. No Python 3.8 here: says so and exits 0
# (the test then skips with that reason).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${EDGE_GMM_PY38_VENV:-.venv38}
PY38=${PYTHON38:-}
if [ -z "$PY38" ]; then
  root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
  for cand in "$root"/versions/3.8*/bin/python "$(command -v python3.8 || true)"; do
    [ -n "$cand" ] && [ -x "$cand" ] && PY38=$cand && break
  done
fi
if [ -z "$PY38" ]; then
  echo "setup: no Python 3.8 (pyenv or python3.8 on PATH): the Python 3.8 device test will skip"
  exit 0
fi

# The stamp is pyproject's hash: a changed dependency list refills the venv, an unchanged one costs nothing.
stamp=$(sha256sum pyproject.toml | cut -d' ' -f1)
check="import edge_gmm, onnxruntime, onnx, paho.mqtt, serial, yaml, cryptography, pytest, jsonschema, hypothesis"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.edge-gmm-stamp" 2>/dev/null)" = "$stamp" ] \
   && "$VENV/bin/python" -c "$check" >/dev/null 2>&1; then
  echo "setup: ready ($VENV, $("$VENV/bin/python" -V 2>&1))"
  exit 0
fi
echo "setup: filling $VENV with edge-gmm[device] on $("$PY38" -V 2>&1) (first run takes a minute)"
[ -x "$VENV/bin/python" ] || "$PY38" -m venv "$VENV"
# onnx builds the test bundles (tests/devices/test_loop_kit.py); it is a test tool here, not a device dependency.
if ! "$VENV/bin/python" -m pip install -q -e ".[device]" pytest jsonschema hypothesis onnx >"$VENV/pip.log" 2>&1; then
  grep -v "^WARNING: Location" "$VENV/pip.log" | tail -20
  echo "setup: pip could not fill $VENV (log: $VENV/pip.log)" >&2
  exit 1
fi
"$VENV/bin/python" -c "$check"
echo "$stamp" > "$VENV/.edge-gmm-stamp"
echo "setup: ready ($VENV, $("$VENV/bin/python" -V 2>&1))"
