"""Pass registry and named pipelines.

Every pass is an ``onnx_ir.passes.InPlacePass`` subclass registered with a
:class:`PassInfo`: its name, what it matches, its preconditions, and its
equivalence -- exact within a tolerance, or changing the function on purpose.
The harness (:mod:`edgec.passes.manager`) and ``edgec build --verify`` read the
equivalence to decide the tolerance of the numerical check.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import onnx_ir as ir

from edgec.errors import unknown_name


@dataclass(frozen=True)
class Equivalence:
    """How a pass relates the function before and after it.

    Attributes:
        kind: ``"exact"`` (same function up to float rounding) or ``"changes-function"``.
        rtol: For exact passes, the tolerance factor: max abs error <= rtol * max(1, max|ref|).
    """

    kind: str = "exact"
    rtol: float = 1e-5

    def to_dict(self) -> dict:
        return {"kind": self.kind, "rtol": self.rtol}


EXACT = Equivalence("exact", 1e-5)


@dataclass(frozen=True)
class PassInfo:
    """Declaration of a pass.

    Attributes:
        name: Registry name (``--passes name,...``).
        matches: The subgraph the pass rewrites.
        preconditions: When it refuses to fire.
        equivalence: Exactness (see :class:`Equivalence`).
        source: Paper or repository of the technique.
        factory: Builds the ``onnx_ir.passes.InPlacePass``.
    """

    name: str
    matches: str
    preconditions: str
    equivalence: Equivalence
    source: str
    factory: Callable[[], ir.passes.PassBase] = field(compare=False, repr=False)


_PASSES: dict[str, PassInfo] = {}

#: The default pipeline, in order; the manager repeats it to a fixed point.
DEFAULT_PIPELINE = ["remove_noop", "fold_constant_gather", "fold_pad_conv", "fold_batchnorm",
                    "reparameterize_branches", "fold_constant_scale", "batchnorm_to_affine"]


def register(name: str, *, matches: str, preconditions: str, source: str,
             equivalence: Equivalence = EXACT):
    """Class decorator registering an ``InPlacePass`` subclass under ``name``."""

    def deco(cls):
        cls.pass_name = name
        _PASSES[name] = PassInfo(name, matches, preconditions, equivalence, source, cls)
        return cls

    return deco


def all_passes() -> list[PassInfo]:
    """Every registered pass, default pipeline order first."""
    _load()
    order = {n: i for i, n in enumerate(DEFAULT_PIPELINE)}
    return sorted(_PASSES.values(), key=lambda p: (order.get(p.name, 99), p.name))


def get_pass(name: str) -> PassInfo:
    """Look up a pass.

    Raises:
        UsageError: unknown pass name.
    """
    _load()
    if name not in _PASSES:
        raise unknown_name("pass", name, _PASSES, "edgec passes list")
    return _PASSES[name]


def resolve_pipeline(spec: str) -> list[PassInfo]:
    """Turn ``--passes`` (``default``, ``none`` or ``a,b,c``) into pass declarations.

    Raises:
        UsageError: an unknown pass name.
    """
    spec = (spec or "none").strip()
    if spec == "none":
        return []
    names = DEFAULT_PIPELINE if spec == "default" else [s.strip() for s in spec.split(",") if s.strip()]
    return [get_pass(n) for n in names]


def _load() -> None:
    from edgec.passes import cleanup, fold, reparameterize  # noqa: F401  (registration)
