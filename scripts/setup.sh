#!/usr/bin/env bash
# Set up edgec on a fresh Debian 12 machine: system packages, a virtualenv in .venv, edgec + test deps.
# Idempotent: a second run only checks what is there.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="g++ g++-aarch64-linux-gnu qemu-user-static debootstrap fakeroot gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm"
missing=""
for p in $APT_PACKAGES; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
echo "edgec setup: checking Debian packages ($APT_PACKAGES)"
if [ -n "$missing" ]; then
  echo "edgec setup: installing Debian packages:$missing"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $missing
fi

PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  echo "edgec setup: creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
echo "edgec setup: upgrading pip"
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned, so that no resolver pulls another build (installed from local disk on CI machines).
echo "edgec setup: installing torch 2.14.1 and torchvision 0.29.1 (several GB on a fresh machine; minutes)"
.venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
echo "edgec setup: installing edgec and its dependencies (TVM, onnxruntime, timm...) with the test extras"
.venv/bin/python -m pip install -q -e ".[test]"
.venv/bin/python -c "import edgec, tvm, onnxruntime, timm; print('edgec setup: ok (TVM', tvm.__version__ + ')')"
