import json
from pathlib import Path

import pytest
import torch

from edgec.errors import ModelError, UsageError
from edgec.zoo import create_model, get, list_models
from edgec.zoo.mcunetv2 import load_config

SHARED = Path(__file__).resolve().parents[3] / "shared" / "zoo" / "mcunetv2_large.json"


def conv_macs(model: torch.nn.Module, shape) -> int:
    total = 0

    def hook(mod, _inp, out):
        nonlocal total
        total += out.numel() * mod.weight[0].numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.zeros(shape))
    for h in handles:
        h.remove()
    return total


def test_families_and_aliases():
    names = {e.name for e in list_models()}
    for alias, canonical in [("mobilenetv4", "mobilenetv4_conv_small"), ("ghostnet", "ghostnet_100"),
                             ("efficientvit", "efficientvit_m0"), ("mcunetv2", "mcunetv2_large")]:
        assert get(alias).alias_of == canonical
        assert canonical in names
    assert {f"ghostnetv3_{w}" for w in ("050", "100", "130", "160")} <= names
    assert {f"efficientvit_m{i}" for i in range(6)} <= names
    assert {"mobilenetv4_hybrid_medium", "mobilenetv4_hybrid_large", "mobilenetv4_conv_large"} <= names


def test_every_entry_has_figures_and_sources():
    for e in list_models():
        assert e.params > 0 and e.macs > 0, e.name
        assert e.paper and e.source and len(e.input_shape) == 4


def test_stored_configs_match_timm():
    """figures.json holds timm's default configs (read instead of importing timm to list the zoo)."""
    from edgec.zoo.models import timm_config

    for e in list_models():
        if e.family == "MCUNetV2" or e.alias_of:
            continue
        cfg = timm_config(e.name)
        assert list(e.input_shape) == cfg["input_shape"] and list(e.mean) == cfg["mean"], e.name
        assert list(e.std) == cfg["std"] and e.num_classes == cfg["num_classes"], e.name
        assert e.pretrained_tag == cfg["pretrained_tag"], e.name


def test_listing_the_zoo_imports_neither_torch_nor_timm():
    import subprocess
    import sys

    code = ("import sys, edgec.zoo; edgec.zoo.get('mobilenetv4'); edgec.zoo.list_models(); "
            "print([m for m in ('torch', 'timm', 'tvm') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stderr[-500:]


def test_unknown_model_suggests_near_names():
    with pytest.raises(UsageError) as exc:
        get("mobilenetv5")
    assert "mobilenetv4" in exc.value.one_line()


def test_mcunetv2_conv_macs_match_paper_config():
    model = create_model("mcunetv2")
    assert round(conv_macs(model, (1, 3, 224, 224)) / 1e6, 1) == 216.4


def test_mcunetv2_width_and_resolution_are_configurable():
    small = create_model("mcunetv2", width_mult=0.5)
    out = small(torch.zeros(1, 3, 160, 160))
    assert out.shape == (1, 1000)
    assert conv_macs(small, (1, 3, 160, 160)) < 216.4e6 / 4


def test_shipped_config_is_the_shared_one():
    if not SHARED.exists():
        pytest.skip("shared/ not beside the repository")
    assert load_config() == json.loads(SHARED.read_text())


def test_random_init_is_seeded():
    a = create_model("mcunetv2", seed=3).state_dict()
    b = create_model("mcunetv2", seed=3).state_dict()
    c = create_model("mcunetv2", seed=4).state_dict()
    key = "classifier.weight"
    assert torch.equal(a[key], b[key]) and not torch.equal(a[key], c[key])


def test_weights_file_loads_safely(tmp_path):
    model = create_model("mcunetv2", seed=1)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    loaded = create_model("mcunetv2", weights=path, seed=2)
    assert torch.equal(loaded.state_dict()["classifier.weight"], model.state_dict()["classifier.weight"])


def test_bad_weights_files(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        create_model("mcunetv2", weights=tmp_path / "missing.pt")
    wrong = tmp_path / "wrong.pt"
    torch.save({"nope": torch.zeros(1)}, wrong)
    with pytest.raises(ModelError, match="do not match"):
        create_model("mcunetv2", weights=wrong)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a pickle")
    with pytest.raises(ModelError, match="is not a PyTorch file"):
        create_model("mcunetv2", weights=garbage)
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 a zip that torch cannot read")
    with pytest.raises(ModelError, match="cannot load"):
        create_model("mcunetv2", weights=broken)


def test_pretrained_unavailable_offline_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="neither cached nor downloadable"):
        create_model("ghostnet_100", pretrained=True)
    with pytest.raises(UsageError, match="no pretrained weights"):
        create_model("mcunetv2", pretrained=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mobilenetv4_conv_small", "ghostnet_050", "efficientvit_m0", "mcunetv2_large"])
def test_figures_match_measurement(name):
    from edgec.zoo.figures import measure

    e = get(name)
    assert measure(name) == {"params": e.params, "macs": e.macs}
