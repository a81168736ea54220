"""Targets are data: every shipped file follows the schema; a bad file gets one line naming the file and field."""

import json

import pytest

from edgec.errors import UsageError
from edgec.targets import TargetError, get_target, list_targets, target_names, validate


def test_shipped_targets_validate_and_host_is_detected():
    names = target_names()
    assert {"host", "rpi4", "rpi5", "jetson-orin-nano", "jetson-nano"} <= set(names)
    host = get_target("host")
    assert isinstance(host.tvm["num-cores"], int) and host.cores >= 1
    assert host.tvm["mcpu"] == "native"  # LLVM's CPU name is the backend's to resolve
    assert host.extra["cpu_model"] and "This machine" in host.description
    assert [t.name for t in list_targets()][0] == "host"


@pytest.mark.parametrize("change, field, what", [
    (lambda d: d.pop("datasheet"), "(top level)", "'datasheet' is missing"),
    (lambda d: d.update(kind="fpga"), "kind", "'fpga' is not one of"),
    (lambda d: d["tvm"].update({"mattr": ["neon"]}), "tvm.mattr.0", "does not match"),
    (lambda d: d.update(verifiy="local"), "(top level)", "unknown field 'verifiy'"),
    (lambda d: d.update(cores=0), "cores", "less than the minimum"),
])
def test_bad_target_file_is_one_line_naming_file_and_field(tmp_path, change, field, what):
    data = get_target("rpi4").to_dict()
    change(data)
    path = tmp_path / "board.json"
    path.write_text(json.dumps(data))
    with pytest.raises(TargetError) as exc:
        get_target(str(path))
    line = exc.value.one_line()
    assert line.startswith(f"target file {path}: {field}: ") and what in line and "\n" not in line


def test_target_file_of_ones_own(tmp_path, run_cli):
    data = get_target("rpi4").to_dict()
    data.update(name="my-pi", description="my board")
    path = tmp_path / "my-pi.json"
    path.write_text(json.dumps(data))
    spec = get_target(str(path))
    assert spec.name == "my-pi" and spec.tvm["mcpu"] == "cortex-a72"
    (tmp_path / "broken.json").write_text("{not json")
    code, _, err = run_cli("build", "mcunetv2", "--target", str(tmp_path / "broken.json"), "--out", str(tmp_path))
    assert code == 2 and "is not valid JSON" in err


def test_validate_accepts_to_dict_minus_detected_fields():
    for spec in list_targets():
        if spec.name != "host":
            validate(spec.to_dict(), spec.name)
    with pytest.raises(UsageError):
        get_target("rpi9")
