"""What an int8 build holds in memory: int8 inputs and outputs (frontend/integer_io.py), the float model's node
order kept through quantization (patches run one after another), and int8 tensors between kernels (no float32
decode written by a kernel, no transposes around float islands, no zero-point padded copy after a ReLU)."""

import math

import numpy as np
import onnx
import pytest

from edgec.frontend.integer_io import integer_io, io_quantization, quantize_sets
from edgec.frontend.quantize import calibration_samples, in_original_order, quantize_int8
from edgec.frontend.reference import run_ort

from .qdq_models import patched_se_cnn

SHAPES = {"x": (1, 3, 16, 16)}


@pytest.fixture(scope="module")
def patched(tmp_path_factory):
    fp32 = onnx.load(str(patched_se_cnn(tmp_path_factory.mktemp("int8mem") / "p.onnx")))
    cal = calibration_samples(None, SHAPES, {"x": np.dtype(np.float32)}, None, 16)
    q = quantize_int8(fp32, cal)
    return fp32, q, integer_io(q), cal


def _params(model, node):
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    return float(inits[node.input[1]]), int(inits[node.input[2]])


def test_the_slices_of_an_input_share_one_quantization(patched):
    """Each slice of the input was calibrated on its own region; they now share the input's scale and zero point."""
    _, q, _, _ = patched
    sliced = {n.output[0] for n in q.graph.node if n.op_type == "Slice"}
    quantizers = [n for n in q.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in sliced]
    assert len(quantizers) == 2 and len({_params(q, n) for n in quantizers}) == 1


def test_integer_io_gives_the_codes_of_the_float_model(patched):
    _, q, iq, cal = patched
    io = io_quantization(iq)
    assert set(io["inputs"]) == {"x"} and set(io["outputs"]) == {"y"}
    assert [v.type.tensor_type.elem_type for v in [*iq.graph.input, *iq.graph.output]] == [onnx.TensorProto.INT8] * 2
    scale, zero = io["outputs"]["y"]["scale"], io["outputs"]["y"]["zero_point"]
    for sample in cal.samples[:3]:
        want = run_ort(q, sample, optimized=True)[0]
        codes = run_ort(iq, quantize_sets({"s": sample}, io["inputs"])["s"], optimized=True)[0]
        assert codes.dtype == np.int8
        np.testing.assert_array_equal((codes.astype(np.float32) - np.float32(zero)) * np.float32(scale), want)


def test_a_float_input_read_by_other_operators_stays_float(patched):
    _, q, _, _ = patched
    model = onnx.ModelProto.FromString(q.SerializeToString())
    model.graph.node.append(onnx.helper.make_node("Relu", ["x"], ["rx"]))
    model.graph.output.append(onnx.helper.make_tensor_value_info("rx", onnx.TensorProto.FLOAT, [1, 3, 16, 16]))
    iq = integer_io(model)
    assert "x" not in io_quantization(iq)["inputs"] and iq.graph.input[0].type.tensor_type.elem_type == 1


def test_quantization_keeps_the_float_models_node_order(patched):
    """quantize_static sorts the graph again; the float model's order is what patch-by-patch execution needs."""
    fp32, q, _, _ = patched
    kept = [n.op_type for n in q.graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")]
    assert kept == [n.op_type for n in fp32.graph.node if n.op_type != "Relu"]  # ReLUs fold into the quantizers
    # the order of another float model (the second branch first) is followed, and the first one's is restored
    other = onnx.ModelProto.FromString(fp32.SerializeToString())
    nodes = list(other.graph.node)
    branch = [n for n in nodes if n.output[0] in ("x1", "c1", "r1")]
    del other.graph.node[:]
    other.graph.node.extend(branch + [n for n in nodes if n not in branch])
    shuffled = in_original_order(q, other)
    onnx.checker.check_model(shuffled)
    slices = [n.output[0] for n in shuffled.graph.node if n.op_type == "Slice"]
    assert slices == ["x1", "x0"]
    restored = in_original_order(shuffled, fp32)
    assert [n.output[0] for n in restored.graph.node] == [n.output[0] for n in q.graph.node]


def _kernel_outputs(fused):
    import tvm
    from tvm import relax

    out = []
    for block in fused["main"].body.blocks:
        for b in block.bindings:
            v = b.value
            if isinstance(v, relax.Call) and v.op == tvm.ir.Op.get("relax.call_tir"):
                out.append((v.args[0].name_hint, tuple(int(d) for d in b.var.ty.shape), str(b.var.ty.dtype)))
    return out


@pytest.mark.parametrize("target", ["host", "cortex-m7"])
def test_between_kernels_every_activation_is_int8(patched, target):
    """No kernel writes a decoded float32 tensor larger than one value per channel (the squeeze-excite mean
    and multiply read the int8 tensor), and no transpose is left but the model's two boundary ones."""
    from edgec.backends.tvm.api import import_model
    from edgec.targets import get_target

    _, _, iq, _ = patched
    if target == "cortex-m7":
        from edgec.backends.c.lower import fuse

        fused = fuse(iq, get_target(target))
    else:
        import tvm

        from edgec.backends.tvm.pipeline import fused_module

        fused = fused_module(import_model(iq), tvm.target.Target({"kind": "llvm"}))
    kernels = _kernel_outputs(fused)
    wide = [(name, shape, dtype) for name, shape, dtype in kernels if dtype not in ("int8", "uint8")
            and math.prod(shape) > max(shape)]
    assert not wide, wide
    assert sum("transpose" in name for name, _, _ in kernels) <= 2, [k[0] for k in kernels]
    assert 'dtype="uint8"' in import_model(iq)["main"].script()  # x - (-128) as uint8: no padded copy


def test_the_integer_io_model_compiles_to_onnxruntimes_codes(patched):
    import tvm
    from tvm import relax

    from edgec.backends.tvm.api import import_model
    from edgec.backends.tvm.pipeline import relax_pipeline

    _, _, iq, cal = patched
    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(import_model(iq), target=target, relax_pipeline=relax_pipeline(target)),
                              tvm.cpu())
    sets = quantize_sets({f"s{i}": s for i, s in enumerate(cal.samples[:4])}, io_quantization(iq)["inputs"])
    for xs in sets.values():
        got = vm["main"](tvm.runtime.tensor(xs["x"])).numpy()
        want = run_ort(iq, xs, optimized=True)[0]
        assert got.dtype == np.int8 and np.abs(got.astype(int) - want.astype(int)).max() <= 1
        assert (got == want).mean() > 0.99


def test_the_c_runner_keeps_the_input_in_the_arena(patched):
    from edgec.backends.c import lower, runner
    from edgec.targets import get_target

    _, _, iq, _ = patched
    spec = get_target("cortex-m7")
    target = lower.c_target(spec)
    scheduled, _ = lower.schedule(lower.fuse(iq, spec), target)
    prog = lower.program(lower.plan_memory(scheduled, target))
    prog.plan_arena()
    (i,) = prog.inputs
    assert prog.tensors[i].buffer >= 0 and prog.tensors[i].dtype == "int8"
    text = runner.model_c(prog)
    assert f"case 0: return (void*)edgec_tensors[{i}].data;" in text and "edgec_in0" not in text


def test_the_integer_kernels_compute_the_qdq_models_float64_function(patched):
    """The requantization has one rounding of the exact multiplier: the kernels equal the QDQ model computed in
    float64 (the truth the verification falls back on), element for element."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.api import import_model
    from edgec.backends.tvm.pipeline import relax_pipeline
    from edgec.frontend.float64 import Float64Model

    _, _, iq, cal = patched
    target = tvm.target.Target({"kind": "llvm"})
    vm = relax.VirtualMachine(tvm.compile(import_model(iq), target=target, relax_pipeline=relax_pipeline(target)),
                              tvm.cpu())
    truth = Float64Model(iq)
    sets = quantize_sets({f"s{i}": s for i, s in enumerate(cal.samples[:4])}, io_quantization(iq)["inputs"])
    for xs in sets.values():
        got = vm["main"](tvm.runtime.tensor(xs["x"])).numpy()
        (want,) = truth.run(xs)
        assert want.dtype == np.int8 and (got == want).mean() > 0.999 and np.abs(got - want.astype(int)).max() <= 1


def test_an_int8_set_onnxruntime_is_off_on_is_decided_by_the_float64_truth(patched):
    """onnxruntime's float32 arithmetic can put its result two steps from the model's function; an artifact at
    the truth passes, one as far from it as onnxruntime passes (rounding noise), one five steps off fails."""
    from edgec.flows.parts import ONE_STEP, References, compare_sets
    from edgec.frontend.float64 import Float64Model
    from edgec.frontend.quantize import output_steps

    _, _, iq, cal = patched
    xs = quantize_sets({"calibration:0": cal.samples[0]}, io_quantization(iq)["inputs"])
    (truth,) = Float64Model(iq).run(xs["calibration:0"])
    off = np.clip(truth.astype(int) + 2, -128, 127).astype(np.int8)
    refs = References()
    refs._models[id(iq)] = (iq, None, {"calibration:0": [off]})  # onnxruntime's result, two steps off the truth
    steps = output_steps(iq)
    assert steps == [1.0]
    good = compare_sets({"calibration:0": [truth]}, {"calibration:0": [off]}, inputs=xs, quantization_steps=steps,
                        int8_oracle=refs.int8_oracle(iq))
    row = good["sets"][0]
    assert good["passed"] and row["float64"]["max_steps"] == 0 and row["float64"]["onnxruntime_max_steps"] == 2
    # as far from the truth as onnxruntime (on other elements): rounding noise, passed
    drift = truth.astype(int).copy()
    drift.flat[:: 7] -= 2
    noisy = compare_sets({"calibration:0": [np.clip(drift, -128, 127).astype(np.int8)]}, {"calibration:0": [off]},
                         inputs=xs, quantization_steps=steps, int8_oracle=refs.int8_oracle(iq))
    assert noisy["passed"] and noisy["sets"][0]["float64"]["allowed_steps"] == 4
    wrong = np.clip(truth.astype(int) - 5, -128, 127).astype(np.int8)  # beyond twice onnxruntime's two steps
    bad = compare_sets({"calibration:0": [wrong]}, {"calibration:0": [off]}, inputs=xs, quantization_steps=steps,
                       int8_oracle=refs.int8_oracle(iq))
    assert bad["passed"] is False and bad["sets"][0]["float64"]["max_steps"] == 5
    assert "beyond 4" in bad["sets"][0]["float64"]["reason"] and ONE_STEP > 1


def test_narrow_constants_keep_the_values_and_leave_wide_ones():
    """Integer constants that fit a narrower type are stored narrow and widened in the kernel (same outputs);
    one that does not fit stays as it is."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.pipeline import legalize_and_fuse

    small = np.array([3, -7, 100, 2 ** 20], np.int64)
    big = np.array([1, 2 ** 40, -5, 0], np.int64)
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([4], "int64"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.add(relax.op.multiply(x, relax.const(small, "int64")), relax.const(big, "int64")))
            out = bb.emit_output(y)
        bb.emit_func_output(out)
    target = tvm.target.Target({"kind": "llvm"})
    with target:
        fused = tvm.transform.Sequential(legalize_and_fuse())(bb.get())
    dtypes = {str(b.value.args[1].fields[i].value.numpy().dtype) for blk in fused["main"].body.blocks
              for b in blk.bindings for i in range(len(b.value.args[1].fields))
              if isinstance(b.value, relax.Call) and isinstance(b.value.args[1], relax.Tuple)
              and isinstance(b.value.args[1].fields[i], tvm.ir.Constant)}
    assert dtypes == {"int32", "int64"}  # `small` stored as int32, `big` kept int64
    exe = tvm.compile(fused, target=target)
    xv = np.array([1, 2, -3, 4], np.int64)
    got = relax.VirtualMachine(exe, tvm.cpu())["main"](tvm.runtime.tensor(xv)).numpy()
    assert got.tolist() == (xv * small + big).tolist()


def test_c_float_literals_are_written_exactly():
    """TVM's C code generator prints 7 digits; the literals become exact hex floats, others stay as printed."""
    import tvm
    from tvm import te

    from edgec.backends.c.lower import exact_float_literals

    scale, third = float(np.float32(6 / 255)), 1 / 3
    a = te.placeholder((4,), "float32", name="a")
    b = te.placeholder((4,), "float64", name="b")
    y = te.compute((4,), lambda i: a[i] * tvm.tirx.const(scale, "float32"), name="y")
    z = te.compute((4,), lambda i: b[i] * tvm.tirx.const(third, "float64"), name="z")
    tir = tvm.IRModule({"f": te.create_prim_func([a, b, y, z])})
    src = "y = x * 2.352941e-02f; z = w * 3.333333e-01; q = 7.123456e-01f;"
    out = exact_float_literals(src, tir)
    assert f"x * {float.hex(scale)}f;" in out and f"w * {float.hex(third)};" in out
    assert "7.123456e-01f" in out  # not a value of the kernels: left as printed


def test_shared_input_quantization_leaves_an_input_with_a_float_reader(patched):
    """An input also read by a float operator keeps its slices' own parameters (no int8 input can come of it)."""
    from edgec.frontend.integer_io import shared_input_quantization

    _, q, _, _ = patched
    model = onnx.ModelProto.FromString(q.SerializeToString())
    sliced = {n.output[0] for n in model.graph.node if n.op_type == "Slice"}
    quantizers = [n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[0] in sliced]
    scale = next(i for i in model.graph.initializer if i.name == quantizers[0].input[1])
    scale.CopyFrom(onnx.numpy_helper.from_array(np.float32(0.5), scale.name))  # the two slices now differ
    model.graph.node.append(onnx.helper.make_node("Relu", ["x"], ["rx"]))
    model.graph.output.append(onnx.helper.make_tensor_value_info("rx", onnx.TensorProto.FLOAT, [1, 3, 16, 16]))
    kept = shared_input_quantization(model)
    assert len({_params(kept, n) for n in quantizers}) == 2
    model.graph.node.pop()
    model.graph.output.pop()
    assert len({_params(shared_input_quantization(model), n) for n in quantizers}) == 1  # without it: shared
