"""Small kernels run on one thread (:mod:`edgec.backends.tvm.small_kernels`): only their parallel loops change,
the values stay bit-identical, and large kernels keep their parallel loops."""

import numpy as np
import onnx

from backends.test_default_schedule import _kernels
from conftest import tiny_cnn


def _run(func, target, seed=3):
    import tvm

    lib = tvm.compile(tvm.IRModule({"main": func.with_attr("global_symbol", "main")}), target=target).mod
    rng = np.random.default_rng(seed)
    args = [tvm.runtime.tensor(rng.standard_normal([int(d) for d in p.ty.shape]).astype("float32"))
            for p in func.params]
    lib["main"](*args)
    return args[-1].numpy()


def test_a_small_kernel_loses_its_parallel_loops_and_keeps_its_values(tmp_path):
    from edgec.backends.tvm.default_schedule import default_schedule
    from edgec.backends.tvm.small_kernels import serialize

    kernels, target = _kernels(onnx.load(str(tiny_cnn(tmp_path / "t.onnx", channels=16, size=20))))
    conv = next(f for n, f in kernels.items() if "conv2d" in n)
    scheduled = default_schedule(conv, target)
    assert "T.parallel(" in scheduled.script()
    serial = serialize(scheduled)
    assert "T.parallel(" not in serial.script() and "T.vectorized(" in serial.script()
    np.testing.assert_array_equal(_run(serial, target), _run(scheduled, target))


def test_work_counts_a_matmuls_flops_and_a_copys_elements():
    from tvm import te

    from edgec.backends.tvm.small_kernels import kernel_work

    a, b = te.placeholder((32, 64), name="A"), te.placeholder((64, 16), name="B")
    k = te.reduce_axis((0, 64), name="k")
    mm = te.compute((32, 16), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    assert kernel_work(te.create_prim_func([a, b, mm])) == 2 * 32 * 64 * 16  # multiply-adds: 2 flops each
    t = te.compute((64, 32), lambda i, j: a[j, i], name="T")
    assert kernel_work(te.create_prim_func([a, t])) == 64 * 32  # a transpose: no flops, its output's elements


def test_the_pass_changes_only_the_kernels_below_the_threshold(tmp_path):
    import tvm

    from edgec.backends.tvm.default_schedule import default_schedule
    from edgec.backends.tvm.small_kernels import kernel_work, serial_small_kernels_pass

    kernels, target = _kernels(onnx.load(str(tiny_cnn(tmp_path / "t.onnx", channels=16, size=20))))
    scheduled = {n: default_schedule(f, target) or f for n, f in kernels.items()}
    work = {n: kernel_work(f) for n, f in scheduled.items()}
    parallel = {n for n, f in scheduled.items() if "T.parallel(" in f.script()}
    assert len(parallel) >= 2, "the test needs two parallel kernels"
    cut = sorted(work[n] for n in parallel)[len(parallel) // 2]  # about half the parallel kernels are below it
    mod = tvm.IRModule({n: f.with_attr("global_symbol", n) for n, f in scheduled.items()})
    changed: set[str] = set()
    out = serial_small_kernels_pass(cut, changed)(mod)
    assert changed == {n for n in parallel if work[n] < cut} and changed
    for gv, func in out.functions_items():
        assert ("T.parallel(" in func.script()) == (gv.name_hint in parallel - changed)
