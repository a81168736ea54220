"""The layering rules (pyproject.toml [tool.importlinter]) hold: lint-imports runs inside the test suite."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_import_contracts_are_kept():
    exe = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(exe), "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    for contract in ("Passes never import a backend", "Only backends and devices import TVM",
                     "Nothing imports the CLI", "Targets are data"):
        assert f"{contract}" in proc.stdout and "BROKEN" not in proc.stdout


def test_tvm_is_not_imported_by_the_light_commands():
    """Listing the zoo, targets and passes needs no TVM (nor devices, nor backends)."""
    code = ("import sys, edgec.targets, edgec.passes, edgec.artifact, edgec.split; "
            "print(sorted(m for m in sys.modules if m == 'tvm' or m.startswith(('edgec.backends', 'edgec.devices'))))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-1000:]
    assert proc.stdout.strip() == "[]"
