"""Fast start: help, the listings and usage errors import no torch, timm or TVM (issue 31).

Each command runs as a user types it (a fresh ``python -X importtime -m edgec.cli`` process); the
modules it imported are read from ``-X importtime``'s lines on stderr. Timings are not asserted
here: ``benchmarks/bench_cli.py`` measures them.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

#: Never imported by the commands below: seconds each (torch and timm ~2-4 s, TVM more).
HEAVY = {"torch", "timm", "tvm", "tvm_ffi", "torchvision"}
#: Also kept out of the commands that need no model at all (onnx costs ~1 s: ml_dtypes, sympy).
ONNX = {"onnx", "onnx_ir", "onnxruntime", "numpy"}

# (arguments, expected exit code, also forbidden)
CASES = [
    ([], 0, ONNX),  # the help
    (["--help"], 0, ONNX),
    (["build", "--help"], 0, ONNX),
    (["zoo", "list"], 0, ONNX),
    (["targets", "list"], 0, ONNX),
    (["passes", "list"], 0, set()),  # the passes are onnx_ir classes: registering them imports onnx_ir
    (["nosuchcommand"], 2, ONNX),
    (["build", "nosuchmodel"], 2, ONNX),
    (["build", "mobilenetv4", "--target", "nosuch"], 2, ONNX),
    (["build", "mobilenetv4", "--target", "nosuch.json"], 2, ONNX),
    (["build", "mobilenetv4", "--bogus-flag"], 2, ONNX),
    (["build", "mobilenetv4", "--input-shape", "1,3,x,224"], 2, ONNX),
    (["build", "mobilenetv4", "--width-mult", "0.5"], 2, ONNX),
    (["build", "mobilenetv4", "--passes", "nosuch"], 2, set()),  # the pass registry is onnx_ir's
    (["memory", "nosuchmodel"], 2, ONNX),
    (["tune", "nosuchmodel"], 2, set()),
    (["split", "nosuchmodel", "--list"], 2, set()),
    (["profile", "nosuchmodel"], 2, set()),
]


def imported(args: list[str], cwd) -> tuple[int, set[str], str]:
    """Exit code, top-level packages imported and stderr (less the import lines) of ``edgec ARGS``."""
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "edgec.cli", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=300)
    names, rest = set(), []
    for line in proc.stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
        else:
            rest.append(line)
    return proc.returncode, names, "\n".join(rest)


@pytest.mark.parametrize("args, code, also", CASES, ids=[" ".join(c[0]) or "(no arguments)" for c in CASES])
def test_no_heavy_imports(tmp_path, args, code, also):
    got, names, err = imported(args, tmp_path)
    assert got == code, err[-2000:]
    assert not names & HEAVY, f"edgec {' '.join(args)} imported {sorted(names & HEAVY)}"
    assert not names & also, f"edgec {' '.join(args)} imported {sorted(names & also)}"
    if code == 2:
        assert "error:" in err and "Traceback" not in err, err[-2000:]
    assert not any(tmp_path.iterdir()), "a usage error or a listing wrote files"


def test_the_probe_sees_imports(tmp_path):
    """The check above can fail: a command that needs onnx shows it in ``-X importtime``'s lines."""
    code, names, _ = imported(["build", "mobilenetv4", "--passes", "nosuch"], tmp_path)
    assert code == 2 and {"onnx_ir", "numpy"} <= names and "edgec" in names
