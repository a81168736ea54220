"""Run the ONNX backend test suite's node cases of the vision operators through ``edgec build``.

    python scripts/onnx_node_cases.py [--per-op 3] [--ops Conv,Resize] [--out DIR]

Each case is a one-node model with one input set and the expected outputs
(``<case>/model.onnx``, ``<case>/test_data_set_0/input_*.pb`` and ``output_*.pb``), read from the
installed ``onnx`` package (``onnx/backend/test/data/node``). Wheels without that folder still ship the
cases' definitions (``onnx.backend.test.case.node``): the script then writes the selected cases, in the
same layout, under ``DIR/onnx-node-data`` first.

A case belongs to an operator when its model is one node of that operator (the ``_expanded`` variants,
several nodes, are left out). Per operator the first ``--per-op`` cases by name are run, round-robin
over the operators. Every case is built for the host with its inputs' shapes, the values of its
parameter inputs (:func:`edgec.frontend.params.parameter_inputs`: Resize scales, Slice starts...) and
its input set as verification samples; a built artifact is then run on this machine and compared with
the suite's expected outputs. Outcomes:

* ``pass``: built, and every output has the expected shape, NaNs and values
  (max abs error <= 1e-4 * max(1, max|expected|));
* ``refused``: edgec stopped with a one-line error and exit code 2, 3, 4, 5, 6 or 8;
* ``failed``: an internal error (exit 70), another exit code, a timeout, a run that raised, or a
  built artifact whose outputs do not match.

Prints one line per case, then the counts per outcome and per operator. Exits 0 (it is a report),
2 on bad arguments.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

OPS = ("Conv ConvTranspose MaxPool AveragePool GlobalAveragePool BatchNormalization Relu LeakyRelu PRelu "
       "Sigmoid HardSigmoid HardSwish Clip Add Mul Concat Reshape Transpose Resize Upsample Slice Split Pad "
       "Squeeze Unsqueeze Flatten Gemm MatMul Softmax ReduceMean DepthToSpace SpaceToDepth "
       "InstanceNormalization LayerNormalization Gather Tile").split()
REFUSED_CODES = {2, 3, 4, 5, 6, 8}
TIMEOUT_S = 300
EDGEC = Path(sys.executable).with_name("edgec")


def single_op(model: onnx.ModelProto) -> str | None:
    """The operator of a one-node model (None for several nodes)."""
    nodes = model.graph.node
    return nodes[0].op_type if len(nodes) == 1 else None


def write_case(case, dest: Path) -> None:
    """Write one ``onnx.backend.test.case`` test case in the suite's layout (model, first input set)."""
    data = dest / "test_data_set_0"
    data.mkdir(parents=True, exist_ok=True)
    (dest / "model.onnx").write_bytes(case.model.SerializeToString())
    inputs, outputs = case.data_sets[0]
    for kind, values, infos in (("input", inputs, case.model.graph.input),
                                ("output", outputs, case.model.graph.output)):
        for j, (value, info) in enumerate(zip(values, infos)):
            tensor = value if isinstance(value, onnx.TensorProto) else numpy_helper.from_array(
                np.asarray(value), info.name)
            (data / f"{kind}_{j}.pb").write_bytes(tensor.SerializeToString())


def find_cases(ops: list[str], out: Path) -> dict[str, list[Path]]:
    """``{op: case folders sorted by name}`` for the one-node cases of ``ops``."""
    installed = Path(onnx.__file__).parent / "backend/test/data/node"
    found: dict[str, list[Path]] = defaultdict(list)
    if installed.is_dir():
        for model in sorted(installed.glob("test_*/model.onnx")):
            op = single_op(onnx.load(model, load_external_data=False))
            if op in ops:
                found[op].append(model.parent)
        return found
    print(f"{installed} is missing: writing the cases from onnx.backend.test.case.node to "
          f"{out / 'onnx-node-data'}", flush=True)
    import onnx.backend.test.case.node as node_cases

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node_cases.collect_testcases()
    for case in sorted(cases, key=lambda c: c.name):
        op = single_op(case.model)
        if op in ops:
            dest = out / "onnx-node-data" / case.name
            write_case(case, dest)
            found[op].append(dest)
    return found


def round_robin(found: dict[str, list[Path]], ops: list[str], per_op: int) -> list[tuple[str, Path]]:
    """The first ``per_op`` cases of each op, in the order op1 #1, op2 #1, ..., op1 #2, ..."""
    return [(op, found[op][i]) for i in range(per_op) for op in ops if i < len(found[op])]


def read_pb(path: Path) -> np.ndarray:
    """A tensor file of the suite as an array."""
    return numpy_helper.to_array(onnx.TensorProto.FromString(path.read_bytes()))


def number(x) -> str:
    """One value for ``--input-value`` (exact for floats)."""
    return repr(float(x)) if isinstance(x, (float, np.floating)) else str(int(x))


def build_args(case: Path, work: Path) -> tuple[list[str], list[np.ndarray]]:
    """``edgec build`` options of a case and its data inputs' arrays (graph order, parameters excluded)."""
    from edgec.frontend.load import graph_inputs
    from edgec.frontend.params import parameter_inputs

    model = onnx.load(case / "model.onnx", load_external_data=False)
    params = parameter_inputs(model)
    names = [i.name for i in graph_inputs(model)]
    arrays = dict(zip(names, (read_pb(p) for p in sorted(
        (case / "test_data_set_0").glob("input_*.pb"), key=lambda p: int(p.stem.split("_")[1])))))
    args, data = [], []
    for name, value in arrays.items():
        if name in params:
            args += ["--input-value", f"{name}={','.join(number(v) for v in value.reshape(-1).tolist())}"]
        else:
            data.append(value)
            if value.ndim:
                args += ["--input-shape", f"{name}={','.join(map(str, value.shape))}"]
    npz = work / "inputs.npz"
    np.savez(npz, **arrays)
    return args + ["--verify-inputs", str(npz)], data


def mismatch(actual: list[np.ndarray], expected: list[np.ndarray]) -> str | None:
    """Why the outputs differ from the expected ones (None when they match)."""
    if len(actual) != len(expected):
        return f"{len(actual)} outputs, expected {len(expected)}"
    for k, (a, e) in enumerate(zip(actual, expected)):
        a, e = np.asarray(a).astype(np.float64), np.asarray(e).astype(np.float64)
        if a.shape != e.shape:
            return f"output {k}: shape {a.shape}, expected {e.shape}"
        if not np.array_equal(np.isnan(a), np.isnan(e)):
            return f"output {k}: NaN positions differ"
        finite = np.isfinite(e)
        if not np.array_equal(a[~finite & ~np.isnan(e)], e[~finite & ~np.isnan(e)]):
            return f"output {k}: infinities differ"
        if not finite.any():
            continue
        err = float(np.max(np.abs(a[finite] - e[finite])))
        tol = 1e-4 * max(1.0, float(np.max(np.abs(e[finite]))))
        if not err <= tol:
            return f"output {k}: max abs error {err:.3g} > tol {tol:.3g}"
    return None


def error_line(text: str) -> str:
    """The last ``error:`` line edgec printed (else the last line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors or lines or [""])[-1]


def run_case(case: Path, out: Path) -> tuple[str, str, str]:
    """Build, run and check one case: ``(outcome, exit code, detail)``."""
    work = out / case.name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        args, data = build_args(case, work)
    except Exception as exc:  # noqa: BLE001  a case this script cannot read is reported, not fatal
        return "failed", "-", f"cannot read the case: {type(exc).__name__}: {exc}"
    cmd = [str(EDGEC), "build", str(case / "model.onnx"), "--target", "host", "--out", str(work), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return "failed", "-", f"timeout after {TIMEOUT_S} s"
    code = str(proc.returncode)
    if proc.returncode in REFUSED_CODES:
        return "refused", code, error_line(proc.stderr)
    if proc.returncode != 0:
        return "failed", code, error_line(proc.stderr + "\n" + proc.stdout)
    libraries = list(work.glob("*/model.so"))
    if len(libraries) != 1:
        return "failed", code, f"{len(libraries)} artifact folders with model.so in {work}"
    try:
        from edgec.devices.local import LocalDevice

        actual = LocalDevice().run(libraries[0], data)
    except Exception as exc:  # noqa: BLE001  a failing run is an outcome
        return "failed", code, f"run error: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    expected = [read_pb(p) for p in sorted((case / "test_data_set_0").glob("output_*.pb"),
                                           key=lambda p: int(p.stem.split("_")[1]))]
    why = mismatch(actual, expected)
    return ("failed", code, f"mismatch: {why}") if why else ("pass", code, "")


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, run the cases, print the table and the counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-op", type=int, default=3, metavar="N", help="cases per operator (default 3)")
    parser.add_argument("--ops", default=",".join(OPS), help="comma-separated operators (default: all vision ops)")
    parser.add_argument("--out", type=Path, help="work folder (default: a new temporary folder)")
    args = parser.parse_args(argv)
    ops = [o.strip() for o in args.ops.split(",") if o.strip()]
    unknown = [o for o in ops if o not in OPS]
    if unknown or not ops:
        parser.error(f"unknown operator(s) {','.join(unknown)}; choose from {','.join(OPS)}")
    if args.per_op < 1:
        parser.error("--per-op must be at least 1")
    out = (args.out or Path(tempfile.mkdtemp(prefix="edgec-node-cases-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)

    cases = round_robin(find_cases(ops, out), ops, args.per_op)
    print(f"{len(cases)} cases, work folder {out}\n", flush=True)
    print(f"{'case':<58} {'op':<22} {'outcome':<8} {'exit':>4}  detail", flush=True)
    results = []
    for op, case in cases:
        outcome, code, detail = run_case(case, out)
        results.append((op, outcome))
        print(f"{case.name:<58} {op:<22} {outcome:<8} {code:>4}  {detail}", flush=True)

    totals = Counter(outcome for _, outcome in results)
    print(f"\ntotal {len(results)}: pass {totals['pass']}, refused {totals['refused']}, failed {totals['failed']}")
    print(f"\n{'op':<22} {'pass':>5} {'refused':>8} {'failed':>7}")
    for op in ops:
        n = Counter(outcome for o, outcome in results if o == op)
        print(f"{op:<22} {n['pass']:>5} {n['refused']:>8} {n['failed']:>7}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
