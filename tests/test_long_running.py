"""Long-running commands a user can trust, one row per case (issue 31), each run through the CLI: the exit
code, the first line that matters, and nothing left behind (no ``edgec-*`` temporary folder, no
half-written artifact).

The rows' runners start ``edgec`` in a subprocess with ``TMPDIR`` pointed at a folder of the test, and
return what the row checks. Rows that tune, emulate or build a split are ``slow``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from conftest import tiny_cnn

EDGEC = str(Path(sys.executable).with_name("edgec"))


@dataclass
class Outcome:
    code: int
    text: str  # stderr then stdout
    left: list[str]  # what should not be there (temporary folders, a half-written artifact)


@dataclass
class Case:
    id: str
    run: Callable[[Path], Outcome]
    code: int
    line: str  # a regex the first matching line of the output must satisfy (``re.search``, one line)
    slow: bool = False


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    (tmp / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp / "tmp"), "COLUMNS": "200", **extra}
    env.pop("GRPC_VERBOSITY", None)
    return env


def _temp_left(tmp: Path) -> list[str]:
    return sorted(p.name for p in (tmp / "tmp").iterdir() if p.name.startswith("edgec"))


def _edgec(tmp: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([EDGEC, *args], env=_env(tmp, **env), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _outcome(proc: subprocess.CompletedProcess, tmp: Path, *extra_left: str) -> Outcome:
    return Outcome(proc.returncode, proc.stderr + proc.stdout, _temp_left(tmp) + list(extra_left))


# --------------------------------------------------------------------------- tuning

def _db_lines(db: Path) -> list[dict]:
    path = db / "database_tuning_record.json"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def tune_interrupted(tmp: Path) -> Outcome:
    """Ctrl-C (SIGINT to the terminal's process group) once the first batch is measured: exit 130, the
    records kept, every temporary folder removed."""
    model, db = tiny_cnn(tmp / "tiny.onnx"), tmp / "db"
    proc = subprocess.Popen([EDGEC, "tune", str(model), "--trials", "400", "--db", str(db)], env=_env(tmp),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    deadline = time.monotonic() + 900
    while not any("batch 1" in line for line in lines) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGINT)
    out = proc.stdout.read()
    proc.wait(timeout=120)
    reader.join(timeout=10)
    records = _db_lines(db)  # every line parses: no torn record
    left = [] if records else ["no record kept"]
    return Outcome(proc.returncode, "".join(lines) + out, _temp_left(tmp) + left)


def tune_minutes(tmp: Path) -> Outcome:
    """``--minutes 0.5``: the search ends within 1.2x its budget, as the summary says."""
    model = tiny_cnn(tmp / "tiny.onnx")
    proc = _edgec(tmp, "tune", str(model), "--minutes", "0.5", "--db", str(tmp / "db"))
    found = re.search(r"in ([0-9.]+) min of search", proc.stdout)
    over = [] if found and float(found.group(1)) <= 0.6 else [f"search time: {found and found.group(0)}"]
    return _outcome(proc, tmp, *over)


# --------------------------------------------------------------------------- checks before work

def big_weights_model(path: Path, mbytes: float = 3.0) -> Path:
    """A model whose one Gemm weight takes ``mbytes`` MB (fp32): over a cortex-m7's 2 MB of flash."""
    n = int(mbytes * 1e6 / 4 / 64)
    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((64, n)).astype(np.float32), "w")
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["y"])]
    graph = helper.make_graph(nodes, "big", [helper.make_tensor_value_info("x", 1, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, n])], [w])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def flash_before_passes(tmp: Path) -> Outcome:
    """Weights over a microcontroller's flash are refused right after the export: no pass step starts,
    no artifact folder is made."""
    model = big_weights_model(tmp / "big.onnx")
    proc = _edgec(tmp, "build", str(model), "--target", "cortex-m7", "--out", str(tmp / "out"))
    left = ["a pass ran"] if re.search(r"^ *· pass", proc.stderr, re.M) else []
    return _outcome(proc, tmp, *left, *(["out/"] if (tmp / "out").exists() and any((tmp / "out").iterdir()) else []))


def bad_verify_timeout(tmp: Path) -> Outcome:
    proc = _edgec(tmp, "build", str(tiny_cnn(tmp / "tiny.onnx")), "--out", str(tmp / "out"),
                  EDGEC_VERIFY_TIMEOUT="soon")
    return _outcome(proc, tmp, *(["out/"] if (tmp / "out").exists() else []))


def killed_then_rebuilt(tmp: Path) -> Outcome:
    """A build killed with SIGKILL (no chance to clean up) while it writes its artifact leaves its scratch
    and staging folders; the next build of that name removes them and succeeds."""
    model, out = tiny_cnn(tmp / "tiny.onnx"), tmp / "out"
    proc = subprocess.Popen([EDGEC, "build", str(model), "--out", str(out)], env=_env(tmp),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline and not list(out.glob(".*.tmp-*")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait(60)
    left = sorted(p.name for p in out.glob(".*.tmp-*")) + _temp_left(tmp)
    if len(left) < 2:  # the kill must have left both a staging and a scratch folder, else nothing is shown
        return Outcome(proc.returncode, f"the kill left only {left}", ["nothing to sweep"])
    again = _edgec(tmp, "build", str(model), "--out", str(out))
    return _outcome(again, tmp, *(p.name for p in out.iterdir() if p.name.startswith(".")))


# --------------------------------------------------------------------------- emulation

def emulated_limit(tmp: Path) -> Outcome:
    """An emulated run past its limit: exit 7, and the message says how to give it longer."""
    proc = _edgec(tmp, "build", str(tiny_cnn(tmp / "tiny.onnx")), "--target", "rpi4", "--out", str(tmp / "out"),
                  "--verify-timeout", "2")
    return _outcome(proc, tmp, *(["out/"] if (tmp / "out").exists() and any((tmp / "out").iterdir()) else []))


CASES = [
    Case("tune-interrupted", tune_interrupted, 130, r"^interrupted; nothing half-written was left behind", slow=True),
    Case("tune-minutes-budget", tune_minutes, 0, r"^ *trials +\d+ measured on local in [0-9.]+ min of search "
                                                 r"\(budget 0\.5 min\)", slow=True),
    Case("flash-refused-before-passes", flash_before_passes, 2,
         r"^error: the model needs \d+ bytes \([0-9.]+ KiB, exported weights; no pass of the pipeline shrinks "
         r"them below that\) of flash, over the 2097152 bytes"),
    Case("bad-verify-timeout-env", bad_verify_timeout, 2,
         r"^error: EDGEC_VERIFY_TIMEOUT 'soon' is not a positive number of seconds"),
    Case("killed-build-swept-by-the-next", killed_then_rebuilt, 0, r"^artifact: .*tiny-host$"),
    Case("emulated-run-past-its-limit", emulated_limit, 7,
         r"^error: the emulated run did not finish within 2 s \(give it longer: --verify-timeout SECONDS or "
         r"EDGEC_VERIFY_TIMEOUT=SECONDS; or skip the check: --no-verify\)", slow=True),
]


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=[pytest.mark.slow] if c.slow else [])
                                  for c in CASES])
def test_long_running_commands(case: Case, tmp_path):
    out = case.run(tmp_path)
    assert out.code == case.code, out.text[-3000:]
    lines = out.text.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    if case.code not in (0, 130):  # a refusal: one error line, the expected one
        assert len(errors) == 1 and re.search(case.line, errors[0]), out.text[-3000:]
    else:
        assert not errors and any(re.search(case.line, line) for line in lines), out.text[-3000:]
    assert "Traceback" not in out.text and "terminate called" not in out.text, out.text[-3000:]
    assert out.left == [], out.left
