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
# pinned_installed PYTHON NAME==VERSION...: pip lists every one at that version (a local label such as +cu130 aside).
pinned_installed() {
  local py=$1 have spec; shift
  have=$("$py" -m pip list --format=freeze 2>/dev/null) || return 1
  for spec in "$@"; do
    printf '%s\n' "$have" | grep -qiE "^${spec//./\\.}(\+[A-Za-z0-9.]+)?$" || return 1
  done
}
if pinned_installed .venv/bin/python "torch==2.14.1" "torchvision==0.29.1"; then
  echo "edgec setup: torch 2.14.1 and torchvision 0.29.1 already installed"
else
  echo "edgec setup: installing torch 2.14.1 and torchvision 0.29.1 (several GB on a fresh machine; minutes)"
  .venv/bin/python -m pip install -q "torch==2.14.1" "torchvision==0.29.1"
fi
echo "edgec setup: installing edgec and its dependencies (TVM, onnxruntime, timm...) with the test extras"
.venv/bin/python -m pip install -q -e ".[test]"

# Test data: files the tests read, fetched here once so that no test downloads anything while it runs
# (tests/conftest.py reads them and fails, naming this script, when one is missing).
TEST_DATA=${EDGEC_TEST_DATA:-$PWD/.cache/test-data}  # an absolute path if set
PPOCR_CLS="$TEST_DATA/rapidocr-1.4.4/ch_ppocr_mobile_v2.0_cls_infer.onnx"
PPOCR_CLS_SHA256=e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c
PPOCR_DET="$TEST_DATA/rapidocr-1.4.4/ch_PP-OCRv4_det_infer.onnx"
PPOCR_DET_SHA256=d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9
echo "edgec setup: checking test data in $TEST_DATA"
if [ ! -f "$PPOCR_CLS" ] || [ ! -f "$PPOCR_DET" ]; then
  echo "edgec setup: fetching the PP-OCR text-direction classifier and text detector (from the rapidocr-onnxruntime 1.4.4 wheel, 15 MB)"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  .venv/bin/python -m pip download -q --no-deps --only-binary=:all: -d "$tmp" "rapidocr-onnxruntime==1.4.4"
  .venv/bin/python - "$tmp"/rapidocr_onnxruntime-1.4.4-*.whl "$PPOCR_CLS" "$PPOCR_CLS_SHA256" "$PPOCR_DET" "$PPOCR_DET_SHA256" <<'PY'
import hashlib, sys, zipfile
from pathlib import Path

wheel, rest = sys.argv[1], sys.argv[2:]
for target, sha in zip(map(Path, rest[::2]), rest[1::2]):
    data = zipfile.ZipFile(wheel).read("rapidocr_onnxruntime/models/" + target.name)
    if hashlib.sha256(data).hexdigest() != sha:
        sys.exit(f"edgec setup: {target.name} in {wheel} does not have the expected sha256 {sha}")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.with_suffix(".part").write_bytes(data)
    target.with_suffix(".part").rename(target)
PY
  rm -rf "$tmp"
  trap - EXIT
fi

.venv/bin/python -c "import edgec, tvm, onnxruntime, timm; print('edgec setup: ok (TVM', tvm.__version__ + ')')"
