"""Convert ONNX models (edgec artifacts' ``model.onnx``) to .tflite with onnx2tf, for LiteRT comparisons (issue 27).

    python3 scripts/convert_zoo_tflite.py [NAME=]MODEL.onnx ... --out DIR [--precision fp32,int8]
        [--calibration [NAME=]FILE.npz ...] [--hardsigmoid relu6|keep] [--no-compare]
        [--int8-float-islands auto|off] [--venv DIR] [--python PY] [--check-python PY]

Maintainers only; ``benchmarks/bench_vs_litert.py`` runs it. TensorFlow never enters edgec's environment: like
``scripts/make_tflite_models.py`` this script creates (or reuses) a scratch virtual environment -- default
``.cache/onnx2tf/venv`` in the repository (``.cache/`` is git-ignored; ``/tmp/onnx2tf/venv`` where it is not) --
with onnx2tf 1.29.24 (the newest pip offers for Python 3.11; 2.x needs a newer Python) and the exact versions
its wheel pins:

    onnx2tf==1.29.24  tensorflow==2.19.0  tf-keras==2.19.0  keras==3.15.1  onnx==1.19.1  onnxsim==0.4.36
    onnxruntime==1.23.0  onnx-graphsurgeon==0.5.8  simple-onnx-processing-tools==1.1.32 (brings sng4onnx==2.0.1)
    ai-edge-litert==2.1.0  psutil==5.9.5  numpy==1.26.4  protobuf==4.25.5  ml-dtypes==0.5.1  h5py==3.11.0
    onnxoptimizer==0.4.2  opencv-python==4.11.0.86  flatbuffers==25.12.19  requests==2.32.5

and runs itself in stages (separate processes):

``calib`` (edgec's python, only where int8 is asked for without ``--calibration``)
    the calibration samples edgec's own int8 build uses for that artifact: input shape and preprocessing from its
    ``manifest.json``, ``calibrate``/``calibration_samples``/seed from that of its int8 sibling
    ``<artifact>-int8`` where there is one (else its own, else edgec's defaults), through
    ``edgec.frontend.quantize.calibration_samples`` (e.g. 16 scikit-image sample images and 16 generated ones
    for 32 samples), as ``<NAME>.calibration.npz``.
``convert`` (scratch venv: onnx, onnx2tf, TensorFlow)
    ``<NAME>_fp32.tflite``: ``onnx2tf.convert`` (onnxsim on, from the venv's ``bin/`` put on PATH), NHWC input.
    ``<NAME>_int8.tflite``: full-integer int8 from the saved_model onnx2tf writes, with
    ``tf.lite.TFLiteConverter`` (``Optimize.DEFAULT``, ``TFLITE_BUILTINS_INT8`` only, per-channel weights,
    int8 activations, float32 input and output) and a ``representative_dataset`` of our calibration samples
    (NCHW in the .npz, transposed to NHWC). onnx2tf otherwise downloads a 20x128x128x3 sample for its
    test inference; a stand-in made from the same samples (or seeded noise) is written where it looks first.
``check`` (``--check-python``: edgec's ``.venv`` where there is one -- the LiteRT the benchmarks run -- else the
    scratch venv; no TensorFlow)
    each .tflite on LiteRT (default resolver: XNNPACK, one thread) against onnxruntime on the original ONNX, over
    a fixed input (seeded standard normal, as the benchmarks feed) and the calibration samples: fp32 max abs
    error (and top-1 agreement); int8 top-1 agreement and SNR (dB, edgec's ``snr_db``) against the fp32 ONNX;
    and the XNNPACK partitions: delegate nodes, and the ops left to the TFLite kernels (found by walking back
    from the outputs through the delegate nodes).

HardSigmoid: onnx2tf writes it as ``max(0, min(1, alpha x + beta))``, which the TFLite converter fuses into
RELU_0_TO_1, an op the XNNPACK delegate does not take: each one splits the graph (ghostnet: 7 HardSigmoid, 8
partitions; mcunetv2: 13, 14). By default (``--hardsigmoid relu6``) each HardSigmoid is rewritten in the ONNX
before conversion as ``Mul(Clip(Add(Mul(x, 6 alpha), 6 beta), 0, 6), 1/6)`` (the first Mul dropped where
``6 alpha`` rounds to 1 in float32): onnx2tf makes that Clip a ``tf.nn.relu6``, the converter folds the Add into
the preceding convolution's bias and fuses the RELU6 into it, and XNNPACK takes the whole graph. For models
that hold a HardSigmoid the as-exported form is converted as well (``DIR/as_exported/``, unless
``--no-compare``) and both partition counts are printed. ``--hardsigmoid keep`` converts the ONNX as it is.

Int8 ops XNNPACK does not take: in the all-int8 efficientvit XNNPACK leaves BATCH_MATMUL x48, SOFTMAX x24 and
RELU x6 to the TFLite kernels (31 partitions). By default (``--int8-float-islands auto``) a model whose int8
conversion (the form written to ``--out``) leaves ops outside XNNPACK is converted again with those op types
kept in float (``tf.lite.experimental.QuantizationDebugger``, ``denylisted_ops``; XNNPACK runs them in float between
QUANTIZE/DEQUANTIZE): efficientvit then is one partition, and measured 0.90 ms against 1.63 ms for the all-int8
file (LiteRT 2.3, one thread, a shared 2-core AMD EPYC). The all-int8 file stays as ``<NAME>_int8_fullint.tflite``;
where the float ops give no fewer partitions the all-int8 file is kept as ``<NAME>_int8.tflite``.

Files written to ``--out``: ``<NAME>_fp32.tflite``, ``<NAME>_int8.tflite``, ``as_exported/...``,
``<NAME>.calibration.npz`` (where made by stage ``calib``),
``logs/<NAME>.convert.log`` (onnx2tf's output), ``convert_report.json`` (per model and file: the checks, the
partitions, the versions; merged with an existing one). ``NAME`` defaults to the file's stem, or to its
folder's name for ``model.onnx`` (an edgec artifact).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The scratch venv's packages: onnx2tf 1.29.24 and the exact versions its wheel requires (plus keras, which
#: tensorflow 2.19 only bounds below, at the version that worked).
PINS = {"onnx2tf": "1.29.24", "tensorflow": "2.19.0", "tf-keras": "2.19.0", "keras": "3.15.1", "onnx": "1.19.1",
        "onnxsim": "0.4.36", "onnxruntime": "1.23.0", "onnx-graphsurgeon": "0.5.8",
        "simple-onnx-processing-tools": "1.1.32", "sng4onnx": "2.0.1", "ai-edge-litert": "2.1.0",
        "psutil": "5.9.5", "numpy": "1.26.4", "protobuf": "4.25.5", "ml-dtypes": "0.5.1", "h5py": "3.11.0",
        "onnxoptimizer": "0.4.2", "opencv-python": "4.11.0.86", "flatbuffers": "25.12.19", "requests": "2.32.5"}
PRECISIONS = ("fp32", "int8")
#: The file onnx2tf reads from its working folder instead of downloading it (its test-inference sample).
O2T_SAMPLE = "calibration_image_sample_data_20x128x128x3_float32.npy"
FIXED_INPUT_SEED = 0
NOISE_SEED = 1


# ------------------------------------------------------------------------------------------------
# outer part: standard library only, runs with any python3


def _venv_helpers():
    """``scripts/make_tflite_models.py`` (its scratch-venv helpers), loaded by path: scripts/ is not a package."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make_tflite_models", Path(__file__).with_name(
        "make_tflite_models.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_venv() -> Path:
    """``.cache/onnx2tf/venv`` where git ignores it, else ``/tmp/onnx2tf/venv``."""
    return _venv_helpers().default_venv("onnx2tf")


def ensure_venv(venv: Path, python: str) -> Path:
    """Create ``venv`` if needed and install :data:`PINS` where a version differs."""
    return _venv_helpers().ensure_venv(venv, python, PINS)


def default_check_python(scratch_py: Path) -> Path:
    """edgec's ``.venv`` python where it has ai_edge_litert and onnxruntime, else the scratch venv's."""
    py = REPO / ".venv" / "bin" / "python"
    if py.is_file() and subprocess.run([str(py), "-c", "import ai_edge_litert, onnxruntime"],
                                       capture_output=True).returncode == 0:
        return py
    return scratch_py


def edgec_python() -> Path:
    """edgec's own ``.venv`` python (for its default calibration samples)."""
    py = REPO / ".venv" / "bin" / "python"
    if not py.is_file():
        raise SystemExit(f"error: {py} not found: give --calibration FILE.npz (or set up edgec's .venv)")
    return py


def model_name(path: Path) -> str:
    return path.parent.name if path.stem == "model" else path.stem


def parse_named(specs: list[str], what: str) -> dict[str | None, Path]:
    """``[NAME=]FILE`` arguments as ``{name or None: absolute path}``."""
    out: dict[str | None, Path] = {}
    for spec in specs:
        name, sep, file = spec.partition("=")
        if not sep or "/" in name or name.endswith((".onnx", ".npz")):
            name, file = None, spec
        path = Path(file).resolve()
        if not path.is_file():
            raise SystemExit(f"error: {what} {path} not found")
        out[name] = path
    return out


def stage_env(venv_bin: Path | None = None) -> dict:
    env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="",
               PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    if venv_bin is not None:  # onnx2tf runs the `onnxsim` command
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def run_stage(py: Path, stage: str, job: dict, work: Path, log: Path | None = None, venv_bin: Path | None = None
              ) -> dict:
    """Run ``stage`` with ``py`` on ``job``; return the JSON it writes (its output goes to ``log`` if given)."""
    job_file, result_file = work / f"{stage}.job.json", work / f"{stage}.result.json"
    job_file.write_text(json.dumps(job))
    result_file.unlink(missing_ok=True)
    cmd = [str(py), str(Path(__file__).resolve()), "--_stage", stage, "--_job", str(job_file),
           "--_result", str(result_file)]
    if log is None:
        proc = subprocess.run(cmd, env=stage_env(venv_bin), cwd=str(work))
    else:
        with open(log, "w") as fh:
            proc = subprocess.run(cmd, env=stage_env(venv_bin), cwd=str(work), stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0 or not result_file.is_file():
        if log is not None:
            print("".join(log.read_text(errors="replace").splitlines(True)[-40:]), file=sys.stderr)
        raise SystemExit(f"error: stage {stage} failed for {job.get('name')} (exit {proc.returncode})"
                         + (f"; log: {log}" if log else ""))
    return json.loads(result_file.read_text())


def fmt_check(c: dict) -> str:
    if c["precision"] == "fp32":
        acc = f"max abs err {c['max_abs_error']:.3g} (|ref| <= {c['max_abs_ref']:.3g}), top-1 {c['top1_agreement']:.0%}"
    else:
        acc = f"top-1 {c['top1_agreement']:.0%}, SNR {c['snr_db']:.1f} dB vs fp32 ONNX"
    p = c["xnnpack"]
    left = ", ".join(f"{k} x{v}" for k, v in sorted(p["left_ops"].items())) or "none"
    return (f"{acc} over {c['inputs']} inputs; XNNPACK {p['partitions']} partition(s), "
            f"{p['delegated_nodes']}/{p['nodes']} nodes delegated, left to TFLite: {left}")


def main_outer(args: argparse.Namespace) -> int:
    models = [(n or model_name(p), p) for n, p in parse_named(args.models, "model").items()]
    if len({n for n, _ in models}) != len(models):
        raise SystemExit("error: two models share a name: give NAME=FILE.onnx")
    calibs = parse_named(args.calibration, "calibration file")
    precisions = [p for p in args.precision.split(",") if p]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise SystemExit(f"error: --precision takes {','.join(PRECISIONS)}")
    out = Path(args.out).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    venv = Path(args.venv).resolve() if args.venv else default_venv()
    py = ensure_venv(venv, args.python)
    check_py = Path(args.check_python) if args.check_python else default_check_python(py)
    report_file = out / "convert_report.json"
    report = json.loads(report_file.read_text()) if report_file.is_file() else {}
    report.setdefault("models", {})
    print(f"onnx2tf venv: {venv}; checks with {check_py}", flush=True)
    failed = []
    with tempfile.TemporaryDirectory(prefix="convert-zoo-tflite-") as tmp:
        for name, onnx_path in models:
            t0 = time.time()
            work = Path(tmp) / name
            work.mkdir()
            calib = calibs.get(name) or calibs.get(None)
            manifest = onnx_path.parent / "manifest.json"
            if calib is None and "int8" in precisions:
                if not manifest.is_file():
                    raise SystemExit(f"error: int8 for {name} needs --calibration {name}=FILE.npz (no edgec "
                                     f"manifest.json beside {onnx_path})")
                calib = out / f"{name}.calibration.npz"
                got = run_stage(edgec_python(), "calib",
                                {"name": name, "manifest": str(manifest), "out": str(calib)}, work)
                print(f"{name}: calibration: {got['description']} -> {calib.name}", flush=True)
            job = {"name": name, "onnx": str(onnx_path), "out": str(out), "precisions": precisions,
                   "calibration": str(calib) if calib else None, "hardsigmoid": args.hardsigmoid,
                   "compare": not args.no_compare}
            print(f"{name}: converting {onnx_path} ({', '.join(precisions)})", flush=True)
            conv = run_stage(py, "convert", job, work, log=out / "logs" / f"{name}.convert.log",
                             venv_bin=py.parent)
            for note in conv["notes"]:
                print(f"{name}: {note}", flush=True)
            check_job = {"name": name, "onnx": str(onnx_path), "files": conv["files"],
                         "calibration": job["calibration"]}
            check = run_stage(check_py, "check", check_job, work)
            islands = [c for c in check["checks"] if c["precision"] == "int8" and c["xnnpack"]["left_ops"]
                       and c["form"] == conv["primary"]]
            if islands and args.int8_float_islands == "auto":
                check["checks"] = [c for c in check["checks"] if c not in islands]
                jobs, files = [], []
                for c in islands:
                    best, full = Path(c["file"]), Path(c["file"]).with_name(f"{name}_int8_fullint.tflite")
                    best.replace(full)
                    ops = sorted(c["xnnpack"]["left_ops"])
                    jobs.append({"saved_model": conv["saved_models"][c["form"]], "float_ops": ops, "file": str(best)})
                    files += [{"tag": f"{c['tag']} all-int8", "precision": "int8", "form": c["form"],
                               "file": str(full)},
                              {"tag": f"{c['tag']} float {'/'.join(ops)}", "precision": "int8", "form": c["form"],
                               "file": str(best), "float_ops": ops}]
                    print(f"{name}: int8 {c['form']}: XNNPACK leaves {'/'.join(ops)} to TFLite: converting again "
                          f"with those ops in float ({best.name}; the all-int8 one is {full.name})", flush=True)
                run_stage(py, "int8", {"name": name, "onnx": str(onnx_path), "calibration": job["calibration"],
                                       "jobs": jobs}, work, log=out / "logs" / f"{name}.int8.log", venv_bin=py.parent)
                again = run_stage(check_py, "check", {**check_job, "files": files}, work)["checks"]
                for full_c, best_c in zip(again[::2], again[1::2]):
                    if best_c["xnnpack"]["partitions"] >= full_c["xnnpack"]["partitions"]:  # no better: undo
                        Path(best_c["file"]).unlink()
                        Path(full_c["file"]).replace(best_c["file"])
                        print(f"{name}: int8 {full_c['form']}: float ops gave no fewer partitions; all-int8 kept",
                              flush=True)
                        again.remove(best_c)
                        full_c.update(file=best_c["file"], tag=full_c["tag"].replace(" all-int8", ""))
                check["checks"] += again
            for c in check["checks"]:
                print(f"  {Path(c['file']).relative_to(out)}: {fmt_check(c)}", flush=True)
                if not c["ok"]:
                    failed.append(f"{name} {c['tag']}: {c['why']}")
            report["models"][name] = {"onnx": str(onnx_path), "calibration": job["calibration"],
                                      "hardsigmoid": conv["hardsigmoid"], "checks": check["checks"],
                                      "seconds": round(time.time() - t0, 1)}
            report["versions"] = {**conv["versions"], **{f"check: {k}": v for k, v in check["versions"].items()}}
            report_file.write_text(json.dumps(report, indent=1, sort_keys=True))
            print(f"{name}: done in {time.time() - t0:.0f} s", flush=True)
    print(f"report: {report_file}")
    for f in failed:
        print(f"CHECK FAILED: {f}", file=sys.stderr)
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------------
# stages: ``calib`` and ``check`` run in edgec's venv (or the scratch one), ``convert`` in the scratch venv


def stage_calib(job: dict) -> dict:
    """edgec's default calibration samples for the artifact of ``job["manifest"]``, as an .npz (NCHW): with the
    options recorded by its int8 sibling ``<artifact>-int8`` where there is one (the samples that build used),
    else by the artifact itself, else edgec's defaults."""
    import numpy as np

    from edgec.frontend.quantize import DEFAULT_SAMPLES, calibration_samples

    path = Path(job["manifest"])
    sibling = path.parent.with_name(path.parent.name + "-int8") / "manifest.json"
    m = json.loads(path.read_text())
    opts = json.loads(sibling.read_text()).get("build_options", {}) if sibling.is_file() else m.get("build_options", {})
    shapes = {i["name"]: tuple(i["shape"]) for i in m["inputs"]}
    dtypes = {i["name"]: np.dtype(i["dtype"]) for i in m["inputs"]}
    cal = calibration_samples(opts.get("calibrate"), shapes, dtypes, m.get("preprocessing"),
                              opts.get("calibration_samples") or DEFAULT_SAMPLES, seed=opts.get("seed") or 0)
    arrays = {n: np.concatenate([s[n] for s in cal.samples]).astype(np.float32) for n in shapes}
    np.savez(job["out"], **arrays)
    source = f"as {sibling.parent.name} was calibrated" if sibling.is_file() else "edgec's defaults"
    return {"description": f"{cal.description} ({source})", "samples": len(cal.samples)}


def rewrite_hardsigmoid(model):
    """``model`` with every HardSigmoid as ``Mul(Clip(Add(Mul(x, 6a), 6b), 0, 6), 1/6)``; and how many."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    graph, nodes, count = model.graph, [], 0

    def const(name, value):
        graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
        return name

    for node in graph.node:
        if node.op_type != "HardSigmoid" or node.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        alpha, beta = float(attrs.get("alpha", 0.2)), float(attrs.get("beta", 0.5))
        p = f"{node.name or 'HardSigmoid'}__relu6_{count}"
        x = node.input[0]
        if np.float32(6 * alpha) != np.float32(1):
            nodes.append(helper.make_node("Mul", [x, const(f"{p}_scale", 6 * alpha)], [f"{p}_scaled"], f"{p}_mul"))
            x = f"{p}_scaled"
        nodes.append(helper.make_node("Add", [x, const(f"{p}_shift", 6 * beta)], [f"{p}_shifted"], f"{p}_add"))
        if opset >= 11:
            nodes.append(helper.make_node("Clip", [f"{p}_shifted", const(f"{p}_lo", 0.0), const(f"{p}_hi", 6.0)],
                                          [f"{p}_relu6"], f"{p}_clip"))
        else:
            nodes.append(helper.make_node("Clip", [f"{p}_shifted"], [f"{p}_relu6"], f"{p}_clip", min=0.0, max=6.0))
        nodes.append(helper.make_node("Mul", [f"{p}_relu6", const(f"{p}_sixth", 1.0 / 6.0)], [node.output[0]],
                                      f"{p}_div6"))
        count += 1
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(model)
    return model, count


def load_calibration(path: str | None, input_names: list[str]) -> dict:
    """``{ONNX input name: (N, C, H, W) float32}`` from the .npz (arrays named as the inputs, or one array)."""
    import numpy as np

    if path is None:
        return {}
    with np.load(path) as z:
        arrays = {k: z[k].astype(np.float32) for k in z.files}
    if len(arrays) == 1 and len(input_names) == 1:
        return {input_names[0]: next(iter(arrays.values()))}
    missing = [n for n in input_names if n not in arrays]
    if missing:
        raise SystemExit(f"calibration file {path} has no arrays for inputs {missing} (has {sorted(arrays)})")
    return {n: arrays[n] for n in input_names}


def stage_convert(job: dict) -> dict:
    """onnx2tf (fp32) and TFLiteConverter on its saved_model (int8), for the chosen and the as-exported forms."""
    import importlib.metadata as md

    import numpy as np
    import onnx

    if shutil.which("onnxsim") is None:
        raise SystemExit("the onnxsim command is not on PATH (onnx2tf would skip simplification)")
    name, out, work = job["name"], Path(job["out"]), Path.cwd()
    model = onnx.load(job["onnx"])
    input_names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    calib = load_calibration(job["calibration"], input_names)
    n_hs = sum(n.op_type == "HardSigmoid" for n in model.graph.node)
    notes, forms = [], []
    if n_hs and job["hardsigmoid"] == "relu6":
        fixed, _ = rewrite_hardsigmoid(onnx.load(job["onnx"]))
        onnx.save(fixed, work / f"{name}.relu6.onnx")
        forms.append(("relu6", work / f"{name}.relu6.onnx", out))
        notes.append(f"{n_hs} HardSigmoid rewritten as Mul(Clip(Add(x, 6 beta), 0, 6), 1/6) before conversion")
        if job["compare"]:
            forms.append(("as_exported", Path(job["onnx"]), out / "as_exported"))
    else:
        forms.append(("as_exported", Path(job["onnx"]), out))
        if n_hs:
            notes.append(f"{n_hs} HardSigmoid kept (--hardsigmoid keep): RELU_0_TO_1 in the .tflite")

    import tensorflow as tf

    # onnx2tf's test-inference sample: 20 of our calibration images (NHWC, 128x128), or seeded noise
    first = calib.get(input_names[0]) if input_names else None
    if first is not None and first.ndim == 4:
        nhwc = np.transpose(first, (0, 2, 3, 1))
        sample = tf.image.resize(nhwc[np.arange(20) % len(nhwc)], (128, 128)).numpy().astype(np.float32)
    else:
        sample = np.random.default_rng(NOISE_SEED).uniform(0.0, 1.0, (20, 128, 128, 3)).astype(np.float32)
    np.save(work / O2T_SAMPLE, sample)

    import onnx2tf

    files, saved_models = [], {}
    for form, src, dest in forms:
        dest.mkdir(parents=True, exist_ok=True)
        o2t = work / f"o2t_{form}"
        print(f"=== onnx2tf {src} ({form})", flush=True)
        onnx2tf.convert(input_onnx_file_path=str(src), output_folder_path=str(o2t), verbosity="warn")
        saved_models[form] = str(o2t)
        made = sorted(o2t.glob("*_float32.tflite"))
        if len(made) != 1:
            raise SystemExit(f"onnx2tf wrote no float32 .tflite in {o2t}: {sorted(p.name for p in o2t.iterdir())}")
        if "fp32" in job["precisions"]:
            shutil.copyfile(made[0], dest / f"{name}_fp32.tflite")
            files.append({"tag": f"fp32 {form}", "precision": "fp32", "form": form,
                          "file": str(dest / f"{name}_fp32.tflite")})
        if "int8" in job["precisions"]:
            print(f"=== int8 from {o2t} ({form})", flush=True)
            blob = int8_from_saved_model(tf, o2t, calib, input_names)
            (dest / f"{name}_int8.tflite").write_bytes(blob)
            files.append({"tag": f"int8 {form}", "precision": "int8", "form": form,
                          "file": str(dest / f"{name}_int8.tflite")})
    versions = {}
    for pkg in ("onnx2tf", "tensorflow", "tf-keras", "keras", "onnx", "onnxsim", "onnxruntime", "onnx-graphsurgeon",
                "sng4onnx", "psutil", "numpy"):
        versions[pkg] = md.version(pkg)
    return {"files": files, "notes": notes, "versions": versions, "saved_models": saved_models, "primary": forms[0][0],
            "hardsigmoid": {"count": n_hs, "form": forms[0][0] if n_hs else None}}


def int8_from_saved_model(tf, saved_model: Path, calib: dict, input_names: list[str],
                          float_ops: list[str] | None = None) -> bytes:
    """Full-integer int8 .tflite (float32 I/O) of onnx2tf's saved_model, calibrated on ``calib`` (NCHW); with
    ``float_ops``, ops of those TFLite types stay float (QuantizationDebugger's ``denylisted_ops``)."""
    import numpy as np

    if not calib:
        raise SystemExit("int8 needs calibration samples (--calibration)")
    sig = tf.saved_model.load(str(saved_model)).signatures["serving_default"].structured_input_signature[1]
    keys = list(sig)
    if len(keys) != len(input_names):
        raise SystemExit(f"saved_model inputs {keys} do not match the ONNX inputs {input_names}")

    def key_of(onnx_name):  # onnx2tf sanitizes names for the saved_model
        for k in keys:
            if k == onnx_name or k == onnx_name.replace(":", "_").replace("/", "_").lstrip("_"):
                return k
        return keys[input_names.index(onnx_name)]

    def as_spec(x, spec):
        shape = [d if d is not None else -1 for d in spec.shape.as_list()]
        if x.ndim == 4 and list(x.shape[1:]) != shape[1:] and [x.shape[i] for i in (2, 3, 1)] == shape[1:]:
            x = np.transpose(x, (0, 2, 3, 1))  # NCHW -> NHWC
        if list(x.shape[1:]) != shape[1:]:
            raise SystemExit(f"calibration sample shape {x.shape} does not fit the saved_model input {shape}")
        return x

    feeds = {key_of(n): as_spec(calib[n], sig[key_of(n)]) for n in input_names}
    count = min(len(x) for x in feeds.values())

    def representative():
        for i in range(count):
            yield {k: tf.constant(x[i:i + 1]) for k, x in feeds.items()}

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    if not float_ops:
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        return conv.convert()
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
    opts = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    debugger = tf.lite.experimental.QuantizationDebugger(converter=conv, debug_dataset=representative,
                                                         debug_options=opts)
    return debugger.get_nondebug_quantized_model()


def stage_int8(job: dict) -> dict:
    """Int8 conversions with float islands (``job["jobs"]``: saved_model, float_ops, file) from the saved_models
    that stage ``convert`` left in the working folder."""
    import onnx
    import tensorflow as tf

    model = onnx.load(job["onnx"], load_external_data=False)
    input_names = [i.name for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    calib = load_calibration(job["calibration"], input_names)
    for j in job["jobs"]:
        print(f"=== int8 from {j['saved_model']}, float {j['float_ops']}", flush=True)
        Path(j["file"]).write_bytes(int8_from_saved_model(tf, Path(j["saved_model"]), calib, input_names,
                                                          j["float_ops"]))
    return {}


def xnnpack_partitions(path: str) -> dict:
    """XNNPACK partitions of ``path`` under LiteRT's default resolver: the delegate nodes, and the original nodes
    still run by TFLite kernels (walking back from the outputs: a tensor a delegate node produces comes from it,
    any other from its original producer, which then is not delegated)."""
    from collections import Counter

    from ai_edge_litert import interpreter as litert

    it = litert.Interpreter(model_path=path, num_threads=1,
                            experimental_op_resolver_type=litert.OpResolverType.AUTO)
    it.allocate_tensors()  # applies the default (XNNPACK) delegate
    ops = it._get_ops_details()
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {}
    for o in ops:
        if o["op_name"] != "DELEGATE":
            for t in o["outputs"]:
                producer.setdefault(int(t), o)
    for o in delegates:
        for t in o["outputs"]:
            producer[int(t)] = o
    seen, left = set(), Counter()
    todo = [int(d["index"]) for d in it.get_output_details()]
    while todo:
        o = producer.get(todo.pop())
        if o is None or o["index"] in seen:
            continue
        seen.add(o["index"])
        if o["op_name"] != "DELEGATE":
            left[o["op_name"]] += 1
        todo += [int(i) for i in o["inputs"] if i >= 0]
    nodes = len(ops) - len(delegates)
    return {"partitions": len(delegates), "nodes": nodes, "delegated_nodes": nodes - sum(left.values()),
            "left_ops": dict(left)}


def stage_check(job: dict) -> dict:
    """Each .tflite against onnxruntime on the original ONNX, and its XNNPACK partitions."""
    import importlib.metadata as md
    import math

    import numpy as np
    import onnxruntime as ort
    from ai_edge_litert import interpreter as litert

    assert "tensorflow" not in sys.modules
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(job["onnx"], opts, providers=["CPUExecutionProvider"])
    ins = sess.get_inputs()
    calib = load_calibration(job["calibration"], [i.name for i in ins])
    rng = np.random.default_rng(FIXED_INPUT_SEED)
    sets = [{i.name: rng.standard_normal(i.shape).astype(np.float32) for i in ins}]
    if calib:
        sets += [{n: x[k:k + 1] for n, x in calib.items()} for k in range(min(len(x) for x in calib.values()))]
    refs = [sess.run(None, s)[0] for s in sets]
    checks = []
    for f in job["files"]:
        it = litert.Interpreter(model_path=f["file"], num_threads=1)
        it.allocate_tensors()
        details = it.get_input_details()
        if len(details) != len(ins):
            raise SystemExit(f"{f['file']}: {len(details)} inputs, the ONNX has {len(ins)}")
        got = []
        for s in sets:
            for d, i in zip(details, ins):  # onnx2tf keeps the input order
                x = s[i.name]
                if tuple(d["shape"]) != x.shape and x.ndim == 4:
                    x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
                it.set_tensor(d["index"], x.astype(d["dtype"]))
            it.invoke()
            y = it.get_tensor(it.get_output_details()[0]["index"]).astype(np.float32)
            got.append(y)
        g = np.stack([y.reshape(-1) for y in got]).astype(np.float64)
        w = np.stack([r.reshape(-1) for r in refs]).astype(np.float64)
        noise, signal = float(((g - w) ** 2).sum()), float((w ** 2).sum())
        snr = math.inf if noise == 0 else 10 * math.log10(signal / noise)
        top1 = float((g.argmax(axis=1) == w.argmax(axis=1)).mean()) if g.ndim == 2 else float("nan")
        c = {**f, "inputs": len(sets), "input_shape": [int(v) for v in details[0]["shape"]],
             "max_abs_error": float(np.abs(g - w).max()), "max_abs_ref": float(np.abs(w).max()),
             "top1_agreement": top1, "snr_db": snr, "xnnpack": xnnpack_partitions(f["file"])}
        if f["precision"] == "fp32":  # float32 rounding: far under the outputs' own scale
            ok = c["max_abs_error"] <= 1e-3 * max(1.0, c["max_abs_ref"])
            c["why"] = "" if ok else f"max abs error {c['max_abs_error']:.3g} over 1e-3 x max(1, |ref|)"
        else:
            ok = snr >= 15.0
            c["why"] = "" if ok else f"SNR {snr:.1f} dB under 15 dB"
        c["ok"] = ok
        checks.append(c)
    versions = {p: md.version(p) for p in ("ai-edge-litert", "onnxruntime", "numpy")}
    return {"checks": checks, "versions": versions}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="*", metavar="[NAME=]MODEL.onnx", help="ONNX files (NCHW float32 input)")
    ap.add_argument("--out", help="output folder")
    ap.add_argument("--precision", default="fp32,int8", help="fp32, int8 or both (default: fp32,int8)")
    ap.add_argument("--calibration", action="append", default=[], metavar="[NAME=]FILE.npz",
                    help="int8 calibration samples: arrays named as the ONNX inputs (or one array), NCHW, first "
                         "axis samples (repeatable; default for an edgec artifact: edgec's own default samples)")
    ap.add_argument("--hardsigmoid", choices=["relu6", "keep"], default="relu6",
                    help="rewrite HardSigmoid into a ReLU6 form XNNPACK takes (default) or keep it")
    ap.add_argument("--no-compare", action="store_true",
                    help="do not also convert the as-exported form of models with a HardSigmoid")
    ap.add_argument("--venv", help="scratch virtual environment (created if missing; default: %s)" % default_venv())
    ap.add_argument("--python", default=sys.executable, help="python that creates the venv (default: this one)")
    ap.add_argument("--check-python", help="python with ai_edge_litert + onnxruntime for the checks "
                                           "(default: edgec's .venv, else the scratch venv)")
    ap.add_argument("--int8-float-islands", choices=["auto", "off"], default="auto",
                    help="auto (default): where XNNPACK leaves ops of the all-int8 model to TFLite, convert again "
                         "with those op types in float (the all-int8 file is kept as NAME_int8_fullint.tflite)")
    ap.add_argument("--_stage", choices=["calib", "convert", "int8", "check"], help=argparse.SUPPRESS)
    ap.add_argument("--_job", help=argparse.SUPPRESS)
    ap.add_argument("--_result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stage:
        job = json.loads(Path(args._job).read_text())
        stages = {"calib": stage_calib, "convert": stage_convert, "int8": stage_int8, "check": stage_check}
        result = stages[args._stage](job)
        Path(args._result).write_text(json.dumps(result))
        return 0
    if not args.models or not args.out:
        ap.error("give one or more ONNX files and --out")
    return main_outer(args)


if __name__ == "__main__":
    sys.exit(main())
