#!/usr/bin/env bash
# Sets up a fresh machine: system packages the tests and demo use, then a venv with edge-gmm[dev].
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
for pair in mosquitto:mosquitto mosquitto_sub:mosquitto-clients socat:socat sshd:openssh-server \
            espeak-ng:espeak-ng sox:sox gcc:gcc make:make chromium:chromium chromedriver:chromium-driver; do
  cmd=${pair%%:*}; pkg=${pair##*:}
  command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || need+=("$pkg")
done
# PortAudio (sounddevice's library) and ALSA's plugins: the audio tests capture from a file-backed ALSA device.
[ -e /usr/lib/x86_64-linux-gnu/libportaudio.so.2 ] || ldconfig -p 2>/dev/null | grep -q libportaudio.so.2 || need+=(libportaudio2)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing system packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
if ! .venv/bin/python -c "import edge_gmm, torch, onnxruntime, paho.mqtt, serial, aeon, sounddevice, cv2, playwright, xdist" >/dev/null 2>&1; then
  echo "setup: installing Python packages into .venv (first run takes a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  # torch first and pinned: the CPU wheel; an unpinned torch pulls a multi-GB CUDA build (FIELD-NOTES).
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[dev]"
fi
echo "setup: ready (.venv)"
# The device side on JetPack 5's Python 3.8, for tests/test_python38_device.py (skips where no 3.8 exists).
bash scripts/setup_py38.sh
