"""The microcontroller C backend: Cortex-M ELFs verified under qemu-system-arm, the flash/SRAM budget, no heap."""

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgec.flows.build import BuildOptions, build
from edgec.errors import BudgetError

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-nm", "qemu-system-arm")
pytestmark = pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS),
                                reason="needs gcc-arm-none-eabi, libnewlib-arm-none-eabi and qemu-system-arm")


def small_cnn(path: Path, size: int = 32, classes: int = 10) -> Path:
    """Conv/BN/ReLU, depthwise conv, pointwise conv with a residual Add, global pool, Gemm; random weights."""
    rng = np.random.default_rng(0)

    def w(name, shape, scale=0.3):
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [w("w1", (8, 3, 3, 3)), w("b1", (8,)), w("g", (8,)), w("be", (8,)), w("m", (8,)),
             numpy_helper.from_array((np.abs(rng.standard_normal(8)) + 0.5).astype(np.float32), "v"),
             w("dw", (8, 1, 3, 3)), w("pw", (8, 8, 1, 1)), w("fw", (classes, 8)), w("fb", (classes,))]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], strides=[2, 2], name="conv1"),
             helper.make_node("BatchNormalization", ["c1", "g", "be", "m", "v"], ["bn"], name="bn1"),
             helper.make_node("Relu", ["bn"], ["r1"], name="relu1"),
             helper.make_node("Conv", ["r1", "dw"], ["d1"], pads=[1, 1, 1, 1], group=8, name="dwconv"),
             helper.make_node("Relu", ["d1"], ["r2"], name="relu2"),
             helper.make_node("Conv", ["r2", "pw"], ["c2"], name="pwconv"),
             helper.make_node("Add", ["c2", "r1"], ["a"], name="residual"),
             helper.make_node("GlobalAveragePool", ["a"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1, name="classifier")]
    graph = helper.make_graph(nodes, "small_cnn", [helper.make_tensor_value_info("x", 1, [1, 3, size, size])],
                              [helper.make_tensor_value_info("y", 1, [1, classes])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def mcu_build(tmp_path, model, target):
    return build(BuildOptions(model=str(model), target=target, out_dir=tmp_path / "out"))


def check_artifact(result, target):
    v = result.report["verification"]
    assert v["passed"] and v["top1_match"] and v["emulated"], v
    assert v["max_abs_error"] <= 1e-4 * max(1.0, v["max_abs_ref"])
    assert "qemu-system-arm" in v["method"] and len(v["sets"]) >= 3
    art = result.artifact
    for name in ("model.elf", "model.elf.json", "Makefile", "link.ld", "model.c", "model.h", "kernels.c",
                 "weights.c", "startup.c", "main.c", "tvm_mcu.h", "kernels.json", "manifest.json", "report.json"):
        assert (art / name).is_file(), name
    mem = json.loads((art / "kernels.json").read_text())["memory"]
    budget = json.loads((art / "manifest.json").read_text())["target"]["mcu"]
    # the runner's arena holds the model's inputs too (TVM's plan does not); it reuses their bytes once read
    assert mem["input_bytes"] < mem["planned_arena_bytes"] <= mem["tvm_storage_plan_bytes"] + mem["input_bytes"]
    assert mem["flash_bytes_used"] == mem["text_bytes"] + mem["data_bytes"] <= budget["flash_bytes"]
    assert mem["sram_bytes_used"] == mem["data_bytes"] + mem["bss_bytes"] <= budget["sram_bytes"]
    assert mem["bss_bytes"] >= mem["planned_arena_bytes"] + mem["workspace_bytes"] + mem["stack_bytes"]
    assert result.report["target"]["name"] == target and result.report["build"]["backend"] == "c"
    return art, mem


def test_small_cnn_for_cortex_m7_matches_onnxruntime_under_qemu_without_heap(tmp_path):
    result = mcu_build(tmp_path, small_cnn(tmp_path / "cnn.onnx"), "cortex-m7")
    art, mem = check_artifact(result, "cortex-m7")
    assert json.loads((art / "model.elf.json").read_text())["machine"] == "mps2-an500"
    # no heap: nothing allocates, the activations live in one static arena of the planned size
    symbols = subprocess.run(["arm-none-eabi-nm", str(art / "model.elf")], capture_output=True, text=True,
                             check=True).stdout
    names = {line.split()[-1] for line in symbols.splitlines()}
    assert not names & {"malloc", "_malloc_r", "calloc", "realloc", "free", "_free_r", "_sbrk", "_sbrk_r"}
    arena = next(line for line in symbols.splitlines() if line.endswith(" edgec_arena"))
    assert arena.split()[1] in "bB"
    assert f"static uint8_t edgec_arena[{mem['planned_arena_bytes']}]" in (art / "model.c").read_text()
    # the Makefile rebuilds the same ELF elsewhere
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("Makefile", "link.ld", "model.c", "model.h", "kernels.c", "weights.c", "startup.c", "main.c",
                 "tvm_mcu.h"):
        shutil.copy(art / name, elsewhere / name)
    subprocess.run(["make", "-s"], cwd=elsewhere, check=True, capture_output=True, timeout=300)
    assert (elsewhere / "model.elf").stat().st_size > 0


def test_small_cnn_for_cortex_m4(tmp_path):
    result = mcu_build(tmp_path, small_cnn(tmp_path / "cnn.onnx", size=24), "cortex-m4")
    art, _ = check_artifact(result, "cortex-m4")
    assert json.loads((art / "model.elf.json").read_text())["machine"] == "mps2-an386"
    assert "-mfpu=fpv4-sp-d16" in (art / "Makefile").read_text()


def test_a_model_over_the_flash_budget_fails_clearly_and_leaves_nothing(tmp_path, run_cli):
    big = tmp_path / "big.onnx"
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((1000, 192)).astype(np.float32), "classifier.weight")
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]),
                               helper.make_node("Gemm", ["f", "classifier.weight"], ["y"], transB=1)], "big",
                              [helper.make_tensor_value_info("x", 1, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", 1, [1, 1000])], [weight])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(big))
    out = tmp_path / "out"
    code, _, err = run_cli("build", str(big), "--target", "cortex-m4", "--out", str(out))
    line = " ".join(err.split())
    assert code == BudgetError.exit_code == 2, err
    assert "flash" in line and "524288 bytes" in line and "'classifier.weight' 768000 bytes" in line, line
    assert "smaller model" in line and "patch_inference" not in line  # weights do not shrink with patches
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_mcunetv2_small_for_cortex_m7_builds_and_verifies(tmp_path, run_cli):
    code, out, err = run_cli("build", "mcunetv2", "--target", "cortex-m7", "--width-mult", "0.35",
                             "--input-shape", "input=1,3,64,64", "--out", str(tmp_path))
    assert code == 0, err
    assert "PASS" in out
    art = tmp_path / "mcunetv2-cortex-m7"
    mem = json.loads((art / "kernels.json").read_text())["memory"]
    assert mem["sram_bytes_used"] <= mem["sram_bytes_budget"] and mem["flash_bytes_used"] <= mem["flash_bytes_budget"]
    assert mem["workspace_bytes"] < mem["planned_arena_bytes"]


def test_the_linked_elf_is_checked_against_the_budget_too(tmp_path):
    """Weights alone fit (the estimate passes); weights and code do not (``arm-none-eabi-size``)."""
    from edgec.targets import get_target

    data = get_target("cortex-m4").to_dict()
    data["name"], data["mcu"]["flash_bytes"] = "tiny-m4", 4096
    board = tmp_path / "tiny-m4.json"
    board.write_text(json.dumps(data))
    with pytest.raises(BudgetError) as exc:
        mcu_build(tmp_path, small_cnn(tmp_path / "cnn.onnx", size=16), str(board))
    line = exc.value.one_line()
    assert "linked" in line and "of flash, over the 4096 bytes" in line and "largest weight" in line
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_arena_plan_never_overlaps_live_buffers_and_reuses_dead_ones():
    from edgec.backends.c.arena import Buffer, greedy_by_size

    rng = np.random.default_rng(0)
    for _ in range(50):
        bufs = []
        for _ in range(int(rng.integers(1, 30))):
            first = int(rng.integers(0, 40))
            bufs.append(Buffer(int(rng.integers(1, 5000)), first, first + int(rng.integers(0, 6))))
        offsets, total = greedy_by_size(bufs, 32)
        for i, a in enumerate(bufs):
            assert offsets[i] % 32 == 0 and offsets[i] + a.size <= total
            for j, b in enumerate(bufs[:i]):
                if a.first <= b.last and b.first <= a.last:  # alive together: disjoint bytes
                    assert offsets[i] + a.size <= offsets[j] or offsets[j] + b.size <= offsets[i]
        live = max(sum(b.size for b in bufs if b.first <= t <= b.last) for t in range(50))
        assert total >= live
    # a chain a -> b -> c: c reuses a's bytes
    offsets, total = greedy_by_size([Buffer(1024, 0, 1), Buffer(512, 1, 2), Buffer(1024, 2, 3)], 32)
    assert total == 1536 and offsets[0] == offsets[2]


def test_patch_inference_shrinks_the_planned_arena_of_the_runner(tmp_path):
    """The patched model's lower peak must show in the runner's planned arena, not only in the analysis."""
    model = small_cnn(tmp_path / "wide.onnx", size=64)
    arenas, reports = {}, {}
    for passes in ("default", "default,patch_inference(stop=a,grid=4)"):
        result = build(BuildOptions(model=str(model), target="cortex-m7", out_dir=tmp_path / passes.replace(",", "_"),
                                    passes=passes))
        check_artifact(result, "cortex-m7")
        arenas[passes] = result.report["memory"]["planned"]["planned_arena_bytes"]
        reports[passes] = result.report
    patched = reports["default,patch_inference(stop=a,grid=4)"]["memory"]
    assert patched["patch_inference"]["grid"] == 4 and patched["patch_inference"]["stop"] == "a"
    assert patched["after_passes"]["fp32"]["peak_activation_bytes"] < patched["before_passes"]["fp32"][
        "peak_activation_bytes"]
    assert arenas["default,patch_inference(stop=a,grid=4)"] < arenas["default"], arenas
    assert patched["planned"]["planned_arena_bytes_before_passes"] > arenas["default,patch_inference(stop=a,grid=4)"]
    # the patches share each weight: one array in flash, not one per patch (issue 28, item 6)
    assert patched["planned"]["weight_bytes"] == reports["default"]["memory"]["planned"]["weight_bytes"]
