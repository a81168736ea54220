"""`edgec split MODEL --list` on every default zoo model: the cut table is complete and consistent."""

import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["mobilenetv4", "ghostnet", "efficientvit", "mcunetv2"])
def test_every_default_zoo_model_lists_its_cuts(name, run_cli):
    import onnx

    from edgec.flows.build import BuildOptions
    from edgec.flows.lower import lower
    from edgec.split import cut_table, split_model

    code, out, err = run_cli("split", name, "--list")
    assert code == 0 and "valid cuts" in out and "JPEG q90" in out, err
    final = lower(BuildOptions(model=name)).final
    table = cut_table(final)
    assert len(table["cuts"]) >= 5 and table["input"]["jpeg_q90_bytes"] > 0
    for c in table["cuts"]:
        assert c["head_macs"] + c["tail_macs"] == table["macs"]
        assert c["bytes_fp32"] == 4 * c["bytes_int8"] > 0
    assert [c["head_macs"] for c in table["cuts"]] == sorted(c["head_macs"] for c in table["cuts"])
    middle = table["cuts"][len(table["cuts"]) // 2]["tensor"]
    head, tail = split_model(final, middle)  # a listed cut really cuts: one tensor crosses
    assert [o.name for o in head.graph.output] == [middle]
    assert [i.name for i in tail.graph.input if i.name not in {t.name for t in tail.graph.initializer}] == [middle]
    onnx.checker.check_model(tail)
