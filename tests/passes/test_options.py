"""Pass options and pipelines: parsing, typing, validation, pipeline files, the CLI's one-line errors."""

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

from edgec.errors import UsageError
from edgec.passes import PassInfo, registry, resolve_pipeline
from edgec.passes.options import convert, split_top, type_words


@dataclass(frozen=True)
class DemoOptions:
    grid: int = field(default=2, metadata={"help": "patches per side"})
    stop: str = "blocks.3"
    mode: Literal["exact", "latency"] = "exact"
    budget_ms: float | None = None
    shape: tuple[int, ...] = (1, 1)
    fast: bool = False

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise ValueError(f"grid must be at least 1, got {self.grid}")


@pytest.fixture
def demo_pass():
    info = PassInfo("demo", "-", "-", registry.EXACT, "tests", factory=lambda options: None, options=DemoOptions)
    registry.add(info)
    yield info
    registry.remove("demo")


def test_options_are_typed(demo_pass):
    (call,) = resolve_pipeline("demo(grid=4, stop=blocks.5, mode=latency, budget_ms=2.5, shape=[3,4], fast=true)")
    o = call.options
    assert (o.grid, o.stop, o.mode, o.budget_ms, o.shape, o.fast) == (4, "blocks.5", "latency", 2.5, (3, 4), True)
    assert call.label() == "demo(grid=4,stop=blocks.5,mode=latency,budget_ms=2.5,shape=[3,4],fast=true)"
    (default,) = resolve_pipeline("demo")
    assert default.options == DemoOptions() and default.label() == "demo"
    (quoted,) = resolve_pipeline("demo(stop='a,b', shape=2x3, budget_ms=none)")
    assert quoted.options.stop == "a,b" and quoted.options.shape == (2, 3) and quoted.options.budget_ms is None


@pytest.mark.parametrize("spec, text", [
    ("demo(gird=4)", "has no option 'gird' (its options: grid (integer), stop (text), mode (one of exact, latency)"),
    ("demo(grid=four)", "demo(grid=four) is invalid: expected an integer"),
    ("demo(mode=fastest)", "expected one of exact, latency"),
    ("demo(fast=maybe)", "expected true or false"),
    ("demo(grid=0)", "grid must be at least 1"),
    ("demo(grid=4", "cannot be read"),
    ("demo(4)", "'4' is not key=value"),
    ("fold_batchnorm(x=1)", "pass 'fold_batchnorm' has no option 'x' (its options: none)"),
    ("default(x=1)", "'default' takes no options"),
    ("dmeo", "unknown pass 'dmeo'"),
])
def test_bad_options_are_one_line_usage_errors(demo_pass, spec, text):
    with pytest.raises(UsageError) as exc:
        resolve_pipeline(spec)
    line = exc.value.one_line()
    assert text in line and "\n" not in line


def test_default_expands_in_place(demo_pass):
    calls = resolve_pipeline("demo(grid=3),default,demo")
    names = [c.name for c in calls]
    assert names[0] == "demo" and names[-1] == "demo" and names[1:-1] == registry.DEFAULT_PIPELINE
    assert resolve_pipeline("none") == []
    for bad in ("", ",", "none,fold_batchnorm", "fold_batchnorm,,remove_noop"):
        with pytest.raises(UsageError):
            resolve_pipeline(bad)


def test_pipeline_files(demo_pass, tmp_path):
    toml = tmp_path / "p.toml"
    toml.write_text('[[pass]]\nname = "default"\n\n[[pass]]\nname = "demo"\ngrid = 5\nshape = [2, 2]\n')
    calls = resolve_pipeline(str(toml))
    assert calls[-1].options.grid == 5 and calls[-1].options.shape == (2, 2) and len(calls) == 8
    js = tmp_path / "p.json"
    js.write_text(json.dumps({"pass": ["fold_batchnorm", {"name": "demo", "mode": "latency"}]}))
    calls = resolve_pipeline(f"@{js}")
    assert [c.name for c in calls] == ["fold_batchnorm", "demo"] and calls[1].options.mode == "latency"
    js.write_text(json.dumps({"pass": [{"name": "demo", "grid": "x"}]}))
    with pytest.raises(UsageError, match=r"pipeline file .*demo\(grid=x\) is invalid"):
        resolve_pipeline(str(js))
    js.write_text(json.dumps({"pass": [{"name": "demo", "grid": True}]}))
    with pytest.raises(UsageError, match="expected an integer"):
        resolve_pipeline(str(js))
    with pytest.raises(UsageError, match="not found"):
        resolve_pipeline(str(tmp_path / "missing.toml"))
    (tmp_path / "bad.toml").write_text("[[pass]\nname=")
    with pytest.raises(UsageError, match="cannot be read"):
        resolve_pipeline(str(tmp_path / "bad.toml"))


def test_type_words_and_helpers():
    assert type_words(int) == "integer" and type_words(float | None) == "number or none"
    assert type_words(tuple[int, ...]) == "list of integers" and type_words(bool) == "true/false"
    assert split_top("a(b=1,c=[1,2]),d") == ["a(b=1,c=[1,2])", "d"]
    assert convert("1x2x3", tuple[int, ...]) == (1, 2, 3) and convert(3, float) == 3.0
    with pytest.raises(ValueError):
        convert("abc", float)


def test_cli_bad_option_is_one_line_exit_2(run_cli, tmp_path):
    out_dir = tmp_path / "out"
    code, _, err = run_cli("build", "mcunetv2", "--passes", "fold_batchnorm(fast=1)", "--out", str(out_dir))
    assert code == 2 and "pass 'fold_batchnorm' has no option 'fast'" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_passes_list_shows_options(run_cli, scale_output_pass):
    code, out, _ = run_cli("passes", "list")
    assert code == 0 and "scale_output" in out and "factor: number = 1.01" in out
    assert "changes the function" in out


def test_non_finite_numbers_are_refused():
    import pytest

    from edgec.errors import UsageError
    from edgec.passes import resolve_pipeline

    for bad in ("nan", "inf", "-inf", "1e400"):
        with pytest.raises(UsageError, match="expected a finite number"):
            resolve_pipeline(f"patch_inference(max_mac_overhead={bad})")
