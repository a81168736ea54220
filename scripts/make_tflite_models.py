"""Make the small TFLite test models under ``tests/data/tflite/`` (maintainers only; issue 27).

    python3 scripts/make_tflite_models.py [--venv DIR] [--out tests/data/tflite] [--python PY] [--check]

TensorFlow never enters edgec's environment: this script creates (or reuses) a scratch virtual
environment -- default ``.cache/tflite-maker/venv`` in the repository (``.cache/`` is git-ignored;
``/tmp/tflite-maker/venv`` where it is not) -- with the pinned generator packages

    tensorflow-cpu==2.21.0   converts tiny Keras models to .tflite
    tflite==2.18.0           flatbuffer reader/builder (op lists; the hand-built detection model)
    ai-edge-litert==2.3.0    the TFLite interpreter, edgec's reference for TFLite inputs

and runs itself with that environment's python, in three stages (separate processes, so the
interpreter never shares a process with TensorFlow):

``convert`` (TensorFlow)
    cnn_fp32.tflite      CONV_2D, DEPTHWISE_CONV_2D, HARD_SWISH, ADD, AVERAGE_POOL_2D, MEAN,
                         FULLY_CONNECTED, RESHAPE, SOFTMAX; input 1x32x32x3 NHWC float32
    cnn_int8.tflite      the same network, full-integer int8 (per-channel weights), float I/O
    cnn_int8_io.tflite   the same, int8 input and output tensors
    cnn_fp16.tflite      float16 weights (DEQUANTIZE fp16 -> fp32 before use)
    custom_op.tflite     MUL + CUSTOM "Erfinv" (allow_custom_ops; the interpreter has no kernel
                         for it, so its .npz holds TensorFlow's tf.math.erfinv output instead)
``detpp`` (no TensorFlow: ``tflite`` flatbuffer builders + flexbuffers)
    detection_postprocess.tflite   one CUSTOM TFLite_Detection_PostProcess op with all its
                                   custom options (the converter's composite-function route
                                   drops ``detections_per_class``)
``refs`` (ai-edge-litert + tflite, no TensorFlow)
    <name>.npz     a fixed input and the interpreter's outputs (default op resolver, i.e. the
                   XNNPACK delegate, num_threads=1); keys ``input_<i>``, ``output_<i>``,
                   ``input_names``, ``output_names``, ``reference`` (who computed the outputs)
    PROVENANCE.md  per file: generator, package versions, op list (read from the flatbuffer),
                   inputs/outputs (name, shape, dtype, quantization), size and sha256

Everything is seeded (weights are drawn from numpy generators with fixed seeds and set explicitly;
``tf.keras.utils.set_random_seed``, op determinism, one TF thread, oneDNN off, PYTHONHASHSEED=0),
and the .npz archives are written with fixed zip timestamps, so a rerun on the same machine
reproduces every file byte for byte; ``--check`` regenerates into a temporary folder and compares
the sha256 of every file with ``--out`` (nothing is written there). The int8 calibration runs float
TensorFlow kernels, so another CPU could in principle round a calibration range differently.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PINS = {"tensorflow-cpu": "2.21.0", "tflite": "2.18.0", "ai-edge-litert": "2.3.0"}
#: Files this script makes, in order (PROVENANCE.md is written last).
MODELS = ["cnn_fp32", "cnn_int8", "cnn_int8_io", "cnn_fp16", "custom_op", "detection_postprocess"]
MAX_TOTAL_BYTES = 200_000
#: Seeds of each model's fixed test input (the calibration set uses its own); the four CNN variants share
#: one float input (cnn_int8_io gets it quantized with its input scale), so their outputs can be compared.
INPUT_SEED = {"cnn_fp32": 1000, "cnn_int8": 1000, "cnn_int8_io": 1000, "cnn_fp16": 1000, "custom_op": 1004,
              "detection_postprocess": 1005}
CALIBRATION_SEED = 1
WEIGHT_SEED = 0
ZIP_DATE = (1980, 1, 1, 0, 0, 0)


# ------------------------------------------------------------------------------------------------
# outer part: standard library only, runs with any python3


def default_venv(name: str = "tflite-maker") -> Path:
    """``.cache/<name>/venv`` where git ignores it, else ``/tmp/<name>/venv`` (``scripts/convert_zoo_tflite.py``
    uses it too)."""
    cand = REPO / ".cache" / name / "venv"
    try:
        ignored = subprocess.run(["git", "-C", str(REPO), "check-ignore", "-q", str(cand)],
                                 capture_output=True).returncode == 0
    except OSError:
        ignored = False
    return cand if ignored else Path(tempfile.gettempdir()) / name / "venv"


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure_venv(venv: Path, python: str, pins: dict[str, str] | None = None) -> Path:
    """Create ``venv`` if needed and install the pinned packages (``pins``, default this script's
    :data:`PINS`) where a version differs."""
    pins = PINS if pins is None else pins
    py = venv_python(venv)
    if not py.is_file():
        print(f"creating {venv} with {python}", flush=True)
        venv.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    probe = ("import importlib.metadata as m\n"
             f"for n in {sorted(pins)!r}:\n"
             "    try: print(n, m.version(n))\n"
             "    except m.PackageNotFoundError: print(n, '-')\n")
    have = dict(line.split() for line in subprocess.run([str(py), "-c", probe], check=True, text=True,
                                                        capture_output=True).stdout.splitlines())
    if any(have.get(n) != v for n, v in pins.items()):
        specs = [f"{n}=={v}" for n, v in pins.items()]
        print(f"installing {' '.join(specs)} into {venv}", flush=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", *specs], check=True)
    return py


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generate(py: Path, staging: Path) -> None:
    env = dict(os.environ, PYTHONHASHSEED="0", TF_CPP_MIN_LOG_LEVEL="2", TF_ENABLE_ONEDNN_OPTS="0",
               TF_DETERMINISTIC_OPS="1", CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    for stage in ("convert", "detpp", "refs"):
        print(f"--- stage {stage}", flush=True)
        subprocess.run([str(py), str(Path(__file__).resolve()), "--_stage", stage, "--_staging", str(staging)],
                       check=True, env=env, cwd=str(staging))


def outputs(folder: Path) -> list[Path]:
    names = [f"{m}.tflite" for m in MODELS] + [f"{m}.npz" for m in MODELS] + ["PROVENANCE.md"]
    return [folder / n for n in names]


def main_outer(args: argparse.Namespace) -> int:
    venv = Path(args.venv).resolve() if args.venv else default_venv()
    out = Path(args.out)
    out = out if out.is_absolute() else (Path.cwd() / out).resolve()
    py = ensure_venv(venv, args.python)
    with tempfile.TemporaryDirectory(prefix="tflite-maker-") as tmp:
        staging = Path(tmp)
        generate(py, staging)
        made = outputs(staging)
        missing = [p.name for p in made if not p.is_file()]
        if missing:
            print(f"error: the generator did not write {missing}", file=sys.stderr)
            return 1
        total = sum(p.stat().st_size for p in made)
        if args.check:
            bad = []
            for p in made:
                old = out / p.name
                same = old.is_file() and sha256(old) == sha256(p)
                print(f"{'same' if same else 'DIFFERS':8s} {p.name}")
                bad += [] if same else [p.name]
            print(f"{len(made) - len(bad)}/{len(made)} files identical to {out}")
            return 1 if bad else 0
        out.mkdir(parents=True, exist_ok=True)
        for p in made:
            shutil.copyfile(p, out / p.name)
    print()
    for p in outputs(out):
        print(f"{p.stat().st_size:8d}  {sha256(p)}  {p.name}")
    print(f"{total:8d}  total bytes in {out}" + ("" if total < MAX_TOTAL_BYTES else f" -- over {MAX_TOTAL_BYTES}!"))
    return 0 if total < MAX_TOTAL_BYTES else 1


# ------------------------------------------------------------------------------------------------
# inner part: runs inside the scratch venv (numpy, tensorflow, tflite, ai_edge_litert)


def fixed_input(model: str, index: int, shape, dtype, quant=None, name: str = ""):
    """The fixed test input ``index`` of ``model`` (float32, or int8 quantized from the float one)."""
    import numpy as np

    rng = np.random.default_rng([INPUT_SEED[model], index])
    if model == "detection_postprocess" and "scores" in name:
        x = rng.uniform(0.0, 1.0, shape).astype(np.float32)
    elif model == "detection_postprocess":  # box encodings (ty, tx, th, tw) around the anchors
        x = rng.normal(0.0, 0.5, shape).astype(np.float32)
    elif model == "custom_op":  # erfinv(0.5 x) for x in (-1.9, 1.9)
        x = rng.uniform(-1.9, 1.9, shape).astype(np.float32)
    else:
        x = rng.uniform(-1.0, 1.0, shape).astype(np.float32)
    if np.dtype(dtype) == np.float32:
        return x
    scale, zero_point = quant
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def write_npz(path: Path, arrays: dict) -> None:
    """``np.savez`` with fixed zip timestamps (numpy's stamps the current time), so reruns match byte for byte."""
    import io
    import zipfile

    import numpy as np

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for key, arr in arrays.items():
            buf = io.BytesIO()
            np.lib.format.write_array(buf, np.asanyarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=ZIP_DATE)
            info.external_attr = 0o644 << 16
            zf.writestr(info, buf.getvalue())


def stage_convert(staging: Path) -> None:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.keras.utils.set_random_seed(WEIGHT_SEED)  # python random, numpy, TF
    tf.config.experimental.enable_op_determinism()
    keras = tf.keras

    inp = keras.Input(shape=(32, 32, 3), batch_size=1, name="input")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv")(inp)
    y = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    y = keras.layers.Activation("hard_swish", name="hswish")(y)
    z = keras.layers.Add(name="add")([x, y])
    z = keras.layers.AveragePooling2D(2, name="avgpool")(z)
    z = keras.layers.GlobalAveragePooling2D(name="gap")(z)  # -> MEAN over H, W
    z = keras.layers.Dense(10, name="fc")(z)
    z = keras.layers.Reshape((2, 5), name="reshape")(z)
    model = keras.Model(inp, keras.layers.Softmax(name="softmax")(z), name="edgec_tflite_cnn")
    # every weight drawn here (not by Keras initializers), biases non-zero
    rng = np.random.default_rng(WEIGHT_SEED)
    weights = []
    for w in model.get_weights():
        fan_in = int(np.prod(w.shape[:-1])) if w.ndim > 1 else 0
        if w.ndim == 4 and w.shape[-1] == 1:  # depthwise (kh, kw, c, 1): fan-in kh*kw
            fan_in = w.shape[0] * w.shape[1]
        std = np.sqrt(2.0 / fan_in) if fan_in else 0.1
        weights.append(rng.normal(0.0, std, w.shape).astype(np.float32))
    model.set_weights(weights)

    def representative():
        crng = np.random.default_rng(CALIBRATION_SEED)
        for _ in range(32):
            yield [crng.uniform(-1.0, 1.0, (1, 32, 32, 3)).astype(np.float32)]

    def save(name, blob):
        (staging / f"{name}.tflite").write_bytes(blob)
        print(f"{name}.tflite: {len(blob)} bytes", flush=True)

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    save("cnn_fp32", conv.convert())

    for name, io_type in (("cnn_int8", None), ("cnn_int8_io", tf.int8)):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if io_type is not None:
            conv.inference_input_type = io_type
            conv.inference_output_type = io_type
        save(name, conv.convert())

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.target_spec.supported_types = [tf.float16]
    save("cnn_fp16", conv.convert())

    # A TF op without a TFLite builtin, kept as CUSTOM (tf.math.lgamma would be decomposed; Erfinv is not).
    class Erfinv(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8], tf.float32, name="x")])
        def __call__(self, x):
            return tf.math.erfinv(x * 0.5)

    m = Erfinv()
    conv = tf.lite.TFLiteConverter.from_concrete_functions([m.__call__.get_concrete_function()], m)
    conv.allow_custom_ops = True
    save("custom_op", conv.convert())
    # The interpreter has no Erfinv kernel: TensorFlow's own output is the reference (used by stage refs).
    x = fixed_input("custom_op", 0, (1, 8), np.float32)
    y = m(tf.constant(x)).numpy()
    np.savez(staging / "custom_op.tf_reference.npz", x=x, y=y)
    print(f"tf {tf.__version__} keras {keras.__version__}", flush=True)


DETPP_OPTIONS = {
    "max_detections": 5,
    "max_classes_per_detection": 1,
    "detections_per_class": 100,
    "use_regular_nms": False,
    "nms_score_threshold": 0.3,
    "nms_iou_threshold": 0.5,
    "num_classes": 3,
    "y_scale": 10.0,
    "x_scale": 10.0,
    "h_scale": 5.0,
    "w_scale": 5.0,
}


def int_vector(b, start_fn, vals: list[int]):
    """A flatbuffer vector of int32 ``vals`` in builder ``b`` (``start_fn``: the table's ``Start...Vector``)."""
    start_fn(b, len(vals))
    for v in reversed(vals):
        b.PrependInt32(v)
    return b.EndVector()


def offset_vector(b, start_fn, offs: list[int]):
    """A flatbuffer vector of table offsets ``offs`` in builder ``b``."""
    start_fn(b, len(offs))
    for o in reversed(offs):
        b.PrependUOffsetTRelative(o)
    return b.EndVector()


def stage_detpp(staging: Path) -> None:
    """detection_postprocess.tflite from the flatbuffer builders, no TensorFlow."""
    import flatbuffers
    import numpy as np
    import tflite
    from flatbuffers import flexbuffers
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    assert "tensorflow" not in sys.modules
    num_anchors, num_classes, max_det = 16, DETPP_OPTIONS["num_classes"], DETPP_OPTIONS["max_detections"]
    g = np.linspace(0.125, 0.875, 4, dtype=np.float32)
    yc, xc = np.meshgrid(g, g, indexing="ij")
    anchors = np.stack([yc.ravel(), xc.ravel(), np.full(num_anchors, 0.25), np.full(num_anchors, 0.25)],
                       axis=1).astype(np.float32)  # (y, x, h, w) per anchor
    b = flatbuffers.Builder(4096)

    def ivec(start_fn, vals):
        return int_vector(b, start_fn, vals)

    def offvec(start_fn, offs):
        return offset_vector(b, start_fn, offs)

    def byte_vec(data: bytes, alignment: int = 1):
        b.StartVector(1, len(data), alignment)
        b.head = b.head - len(data)
        b.Bytes[b.head:b.head + len(data)] = data
        return b.EndVector()

    anchor_data = byte_vec(anchors.tobytes(), 16)
    tflite.BufferStart(b)
    empty_buf = tflite.BufferEnd(b)  # buffer 0: the empty sentinel
    tflite.BufferStart(b)
    tflite.BufferAddData(b, anchor_data)
    anchor_buf = tflite.BufferEnd(b)

    specs = [  # name, shape, buffer
        ("boxes", [1, num_anchors, 4], 0),
        ("scores", [1, num_anchors, num_classes + 1], 0),  # column 0: background
        ("anchors", [num_anchors, 4], 1),
        ("detection_boxes", [1, max_det, 4], 0),
        ("detection_classes", [1, max_det], 0),
        ("detection_scores", [1, max_det], 0),
        ("num_detections", [1], 0),
    ]
    tensors = []
    for name, shape, buf in specs:
        n = b.CreateString(name)
        s = ivec(tflite.TensorStartShapeVector, shape)
        tflite.TensorStart(b)
        tflite.TensorAddShape(b, s)
        tflite.TensorAddType(b, TensorType.FLOAT32)
        tflite.TensorAddBuffer(b, buf)
        tflite.TensorAddName(b, n)
        tensors.append(tflite.TensorEnd(b))

    custom = byte_vec(bytes(flexbuffers.Dumps(DETPP_OPTIONS)))
    op_in = ivec(tflite.OperatorStartInputsVector, [0, 1, 2])
    op_out = ivec(tflite.OperatorStartOutputsVector, [3, 4, 5, 6])
    tflite.OperatorStart(b)
    tflite.OperatorAddOpcodeIndex(b, 0)
    tflite.OperatorAddInputs(b, op_in)
    tflite.OperatorAddOutputs(b, op_out)
    tflite.OperatorAddCustomOptions(b, custom)
    tflite.OperatorAddCustomOptionsFormat(b, 0)  # FLEXBUFFERS
    op = tflite.OperatorEnd(b)

    tvec = offvec(tflite.SubGraphStartTensorsVector, tensors)
    sg_in = ivec(tflite.SubGraphStartInputsVector, [0, 1])
    sg_out = ivec(tflite.SubGraphStartOutputsVector, [3, 4, 5, 6])
    ovec = offvec(tflite.SubGraphStartOperatorsVector, [op])
    sg_name = b.CreateString("main")
    tflite.SubGraphStart(b)
    tflite.SubGraphAddTensors(b, tvec)
    tflite.SubGraphAddInputs(b, sg_in)
    tflite.SubGraphAddOutputs(b, sg_out)
    tflite.SubGraphAddOperators(b, ovec)
    tflite.SubGraphAddName(b, sg_name)
    sg = tflite.SubGraphEnd(b)

    code = b.CreateString("TFLite_Detection_PostProcess")
    tflite.OperatorCodeStart(b)
    tflite.OperatorCodeAddDeprecatedBuiltinCode(b, BuiltinOperator.CUSTOM)
    tflite.OperatorCodeAddBuiltinCode(b, BuiltinOperator.CUSTOM)
    tflite.OperatorCodeAddCustomCode(b, code)
    tflite.OperatorCodeAddVersion(b, 1)
    opc = tflite.OperatorCodeEnd(b)

    opcs = offvec(tflite.ModelStartOperatorCodesVector, [opc])
    sgs = offvec(tflite.ModelStartSubgraphsVector, [sg])
    bufs = offvec(tflite.ModelStartBuffersVector, [empty_buf, anchor_buf])
    desc = b.CreateString("edgec scripts/make_tflite_models.py: hand-built TFLite_Detection_PostProcess")
    tflite.ModelStart(b)
    tflite.ModelAddVersion(b, 3)
    tflite.ModelAddOperatorCodes(b, opcs)
    tflite.ModelAddSubgraphs(b, sgs)
    tflite.ModelAddDescription(b, desc)
    tflite.ModelAddBuffers(b, bufs)
    b.Finish(tflite.ModelEnd(b), file_identifier=b"TFL3")
    data = bytes(b.Output())
    (staging / "detection_postprocess.tflite").write_bytes(data)
    print(f"detection_postprocess.tflite: {len(data)} bytes", flush=True)


GENERATORS = {
    "cnn_fp32": "stage `convert`: Keras CNN (weights from numpy seed 0) -> `tf.lite.TFLiteConverter.from_keras_model`",
    "cnn_int8": "stage `convert`: same CNN, `optimizations=[DEFAULT]`, `representative_dataset` (32 x U(-1,1), "
                "seed 1), `supported_ops=[TFLITE_BUILTINS_INT8]`",
    "cnn_int8_io": "stage `convert`: as cnn_int8 plus `inference_input_type = inference_output_type = tf.int8`",
    "cnn_fp16": "stage `convert`: same CNN, `optimizations=[DEFAULT]`, `supported_types=[tf.float16]`",
    "custom_op": "stage `convert`: `tf.Module` computing `tf.math.erfinv(x * 0.5)`, "
                 "`from_concrete_functions`, `allow_custom_ops=True`",
    "detection_postprocess": "stage `detpp`: written with the `tflite` package's flatbuffer builders and "
                             "`flatbuffers.flexbuffers` (no TensorFlow); custom options: "
                             + ", ".join(f"{k}={v}" for k, v in DETPP_OPTIONS.items()),
}


def describe(path: Path) -> dict:
    """Op list, I/O tensors, tensor type counts and metadata of a .tflite file, read with the ``tflite`` package."""
    import tflite
    from tflite.BuiltinOperator import BuiltinOperator
    from tflite.TensorType import TensorType

    op_names = {v: k for k, v in vars(BuiltinOperator).items() if not k.startswith("_")}
    type_names = {v: k for k, v in vars(TensorType).items() if not k.startswith("_")}
    buf = path.read_bytes()
    m = tflite.Model.GetRootAsModel(buf, 0)
    assert m.SubgraphsLength() == 1, path
    sg = m.Subgraphs(0)
    ops = []
    for i in range(sg.OperatorsLength()):
        oc = m.OperatorCodes(sg.Operators(i).OpcodeIndex())
        name = op_names[max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())]
        ops.append(f"CUSTOM({oc.CustomCode().decode()})" if name == "CUSTOM" else name)

    def quant(t):
        q = t.Quantization()
        if q is None or q.ScaleLength() == 0:
            return None
        scales, zps = q.ScaleAsNumpy().tolist(), q.ZeroPointAsNumpy().tolist()
        return {"scale": scales, "zero_point": zps, "axis": q.QuantizedDimension()}

    def io(idxs):
        res = []
        for t in idxs:
            ten = sg.Tensors(int(t))
            res.append({"name": ten.Name().decode(), "shape": ten.ShapeAsNumpy().tolist(),
                        "dtype": type_names[ten.Type()].lower(), "quant": quant(ten)})
        return res

    types, per_channel = {}, []
    for i in range(sg.TensorsLength()):
        ten = sg.Tensors(i)
        types[type_names[ten.Type()]] = types.get(type_names[ten.Type()], 0) + 1
        q = quant(ten)
        if q and len(q["scale"]) > 1:
            per_channel.append(f"`{ten.Name().decode()}` ({len(q['scale'])} scales, axis {q['axis']})")
    meta = [m.Metadata(i).Name().decode() for i in range(m.MetadataLength())]
    desc = m.Description().decode() if m.Description() else ""
    return {"ops": ops, "inputs": io(sg.InputsAsNumpy()), "outputs": io(sg.OutputsAsNumpy()), "types": types,
            "per_channel": per_channel, "metadata": meta, "description": desc, "version": m.Version()}


def fmt_quant(q) -> str:
    if q is None:
        return "none"
    if len(q["scale"]) == 1:
        return f"scale={q['scale'][0]!r} zero_point={q['zero_point'][0]}"
    return f"per-channel: {len(q['scale'])} scales, axis {q['axis']}"


def stage_refs(staging: Path) -> None:
    """Run each model with ai-edge-litert; write <name>.npz and PROVENANCE.md."""
    import importlib.metadata as md
    import platform

    import numpy as np
    from ai_edge_litert import interpreter as litert

    assert "tensorflow" not in sys.modules
    versions = {n: md.version(n) for n in
                ("tensorflow-cpu", "keras", "tflite", "ai-edge-litert", "flatbuffers", "numpy", "ml_dtypes",
                 "protobuf")}
    ref_label = (f"ai-edge-litert {versions['ai-edge-litert']} Interpreter(num_threads=1), default op resolver "
                 "(AUTO: XNNPACK delegate)")
    sections, rows = [], []
    for name in MODELS:
        path = staging / f"{name}.tflite"
        info = describe(path)
        note = ""
        try:
            it = litert.Interpreter(model_path=str(path), num_threads=1)
            it.allocate_tensors()
            feeds = []
            for i, d in enumerate(it.get_input_details()):
                x = fixed_input(name, i, tuple(d["shape"]), d["dtype"], d["quantization"], d["name"])
                it.set_tensor(d["index"], x)
                feeds.append(x)
            it.invoke()
            outs = [it.get_tensor(d["index"]).copy() for d in it.get_output_details()]
            in_names = [d["name"] for d in it.get_input_details()]
            out_names = [d["name"] for d in it.get_output_details()]
            label = ref_label
            # the same run without the XNNPACK delegate, for the record
            it2 = litert.Interpreter(model_path=str(path), num_threads=1,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            it2.allocate_tensors()
            for d, x in zip(it2.get_input_details(), feeds):
                it2.set_tensor(d["index"], x)
            it2.invoke()
            diff = max(float(np.abs(it2.get_tensor(d["index"]).astype(np.float64) - o.astype(np.float64)).max())
                       for d, o in zip(it2.get_output_details(), outs))
            note = f"max abs difference to the builtin kernels without XNNPACK: {diff!r}"
        except RuntimeError as e:
            tf_ref = staging / f"{name}.tf_reference.npz"
            if not tf_ref.is_file():
                raise
            first = str(e).strip().splitlines()[0]
            ref = np.load(tf_ref)
            feeds, outs = [ref["x"]], [ref["y"]]
            in_names = [t["name"] for t in info["inputs"]]
            out_names = [t["name"] for t in info["outputs"]]
            label = f"tensorflow-cpu {versions['tensorflow-cpu']} eager tf.math.erfinv(x * 0.5)"
            note = f"ai-edge-litert {versions['ai-edge-litert']} cannot run the model: `{first}`"
            tf_ref.unlink()
        arrays = {f"input_{i}": x for i, x in enumerate(feeds)}
        arrays.update({f"output_{i}": o for i, o in enumerate(outs)})
        arrays["input_names"] = np.array(in_names)
        arrays["output_names"] = np.array(out_names)
        arrays["reference"] = np.array(label)
        write_npz(staging / f"{name}.npz", arrays)
        assert in_names == [t["name"] for t in info["inputs"]] and out_names == [t["name"] for t in info["outputs"]]

        lines = [f"## {name}.tflite", "",
                 f"- generator: {GENERATORS[name]}",
                 f"- schema version {info['version']}; description: `{info['description']}`; "
                 f"metadata: {', '.join(f'`{x}`' for x in info['metadata']) or 'none'}",
                 f"- operators ({len(info['ops'])}, execution order): {' '.join(info['ops'])}",
                 f"- tensor types: {', '.join(f'{k} x{v}' for k, v in sorted(info['types'].items()))}",
                 f"- per-channel quantized tensors: {', '.join(info['per_channel']) or 'none'}",
                 f"- reference `{name}.npz`: {label}; {note}",
                 "", "| io | # | name | shape | dtype | quantization |", "|---|---|---|---|---|---|"]
        for kind, tensors, vals in (("input", info["inputs"], feeds), ("output", info["outputs"], outs)):
            for i, (t, v) in enumerate(zip(tensors, vals)):
                assert list(v.shape) == t["shape"] and v.dtype.name == t["dtype"], (name, t, v.shape, v.dtype)
                lines.append(f"| {kind} | {i} | {t['name']} | {t['shape']} | {t['dtype']} | {fmt_quant(t['quant'])} |")
        sections.append("\n".join(lines))
        print(f"{name}: ops {' '.join(info['ops'])}; reference: {label.split(' (')[0]}", flush=True)

    for name in MODELS:
        for ext in ("tflite", "npz"):
            p = staging / f"{name}.{ext}"
            rows.append(f"| {p.name} | {p.stat().st_size} | {hashlib.sha256(p.read_bytes()).hexdigest()} |")
    text = "\n".join([
        "# TFLite test models: provenance",
        "",
        "Made by `python3 scripts/make_tflite_models.py` (issue 27) in a scratch virtual environment, never in",
        "edgec's; regenerate them the same way (`--check` compares a regeneration with these files). All seeds",
        "are fixed and the files are byte-for-byte reproducible on the machine that made them.",
        "",
        f"Python {platform.python_version()} on {platform.system()} {platform.machine()}. Packages:",
        "",
        "| package | version |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in versions.items()],
        "",
        "Each `<name>.npz` holds `input_<i>` (a fixed input), `output_<i>` (the reference outputs), `input_names`,",
        "`output_names` (tensor names in the model's order) and `reference` (what computed the outputs).",
        "",
        "## Files",
        "",
        "| file | bytes | sha256 |",
        "|---|---:|---|",
        *rows,
        "",
        *[s + "\n" for s in sections],
    ])
    (staging / "PROVENANCE.md").write_text(text.rstrip("\n") + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--venv", help="scratch virtual environment (created if missing; default: %s)" % default_venv())
    ap.add_argument("--out", default=str(REPO / "tests" / "data" / "tflite"), help="output folder")
    ap.add_argument("--python", default=sys.executable, help="python that creates the venv (default: this one)")
    ap.add_argument("--check", action="store_true", help="regenerate into a temporary folder, compare with --out")
    ap.add_argument("--_stage", choices=["convert", "detpp", "refs"], help=argparse.SUPPRESS)
    ap.add_argument("--_staging", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._stage:
        staging = Path(args._staging)
        {"convert": stage_convert, "detpp": stage_detpp, "refs": stage_refs}[args._stage](staging)
        return 0
    return main_outer(args)


if __name__ == "__main__":
    sys.exit(main())
