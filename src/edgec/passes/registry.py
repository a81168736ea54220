"""Pass registry: every pass with its declaration.

A pass is an ``onnx_ir.passes.InPlacePass`` subclass registered with a
:class:`PassInfo`: its name, what it matches, its preconditions, its
equivalence, its source, and optionally its options (a frozen dataclass, see
:mod:`edgec.passes.options`) and its own fidelity figure. The harness
(:mod:`edgec.passes.manager`) and ``edgec build --verify`` read the equivalence
to decide what to check:

* ``exact`` -- the same function up to float rounding: max abs error <=
  ``rtol * max(1, max|ref|)`` before/after the pass, checked every time it fires;
* ``allclose`` -- within ``rtol * max(1, max|ref|) + atol`` (approximations);
* ``changes-function`` -- changes the function on purpose (activation removal, a
  learned bottleneck): the pass runs once, its fidelity is measured and reported,
  and the compiled artifact is checked against the model after it.

This module imports no pass: :mod:`edgec.passes` imports the pass modules, which
register themselves here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import onnx_ir as ir

from edgec.errors import unknown_name
from edgec.passes.options import PassCall, parse_pipeline


@dataclass(frozen=True)
class Equivalence:
    """How a pass relates the function before and after it.

    Attributes:
        kind: ``"exact"``, ``"allclose"`` or ``"changes-function"``.
        rtol: Relative factor of the tolerance: max abs error <= rtol * max(1, max|ref|) + atol.
        atol: Absolute part of the tolerance (``allclose``).
    """

    kind: str = "exact"
    rtol: float = 1e-5
    atol: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in ("exact", "allclose", "changes-function"):
            raise ValueError(f"unknown equivalence kind {self.kind!r}")

    @property
    def changes_function(self) -> bool:
        return self.kind == "changes-function"

    def to_dict(self) -> dict:
        return {"kind": self.kind, "rtol": self.rtol, "atol": self.atol}

    def describe(self) -> str:
        """Plain words, as ``edgec passes list`` shows it."""
        if self.kind == "exact":
            return f"exact (≤ {self.rtol:g}·max(1,|ref|))"
        if self.kind == "allclose":
            return f"allclose (≤ {self.rtol:g}·max(1,|ref|) + {self.atol:g})"
        return "changes the function (fidelity reported)"


EXACT = Equivalence("exact", 1e-5)
CHANGES_FUNCTION = Equivalence("changes-function", 0.0)

#: ``fidelity(before, after, input_sets) -> dict``: a function-changing pass's own figure.
Fidelity = Callable[[Any, Any, list], dict]


@dataclass(frozen=True)
class PassInfo:
    """Declaration of a pass.

    Attributes:
        name: Registry name (``--passes name,...``).
        matches: The subgraph the pass rewrites.
        preconditions: When it refuses to fire.
        equivalence: See :class:`Equivalence`.
        source: Paper or repository of the technique.
        factory: Builds the ``onnx_ir.passes.PassBase``; called with the options
            instance when the pass declares options, else with no argument.
        options: The options dataclass, or None.
        fidelity: The pass's own fidelity figure (function-changing passes), or None for
            the default (max abs error and top-1 agreement against the model before it).
    """

    name: str
    matches: str
    preconditions: str
    equivalence: Equivalence
    source: str
    factory: Callable[..., ir.passes.PassBase] = field(compare=False, repr=False)
    options: type | None = None
    fidelity: Fidelity | None = field(default=None, compare=False, repr=False)


_PASSES: dict[str, PassInfo] = {}

#: The default pipeline, in order; the manager repeats it to a fixed point.
DEFAULT_PIPELINE = ["remove_noop", "fold_constant_gather", "fold_pad_conv", "fold_batchnorm",
                    "reparameterize_branches", "fold_constant_scale", "batchnorm_to_affine"]


def register(name: str, *, matches: str, preconditions: str, source: str, equivalence: Equivalence = EXACT,
             options: type | None = None, fidelity: Fidelity | None = None):
    """Class decorator registering an ``InPlacePass`` subclass under ``name``.

    Args:
        options: A frozen dataclass of the pass's options; the class is then built as
            ``cls(options)``.
        fidelity: See :class:`PassInfo`.
    """

    def deco(cls):
        cls.pass_name = name
        _PASSES[name] = PassInfo(name, matches, preconditions, equivalence, source, cls, options, fidelity)
        return cls

    return deco


def add(info: PassInfo) -> None:
    """Register a declaration directly (a pass defined outside this package, e.g. in tests)."""
    _PASSES[info.name] = info


def remove(name: str) -> None:
    """Unregister a pass (tests)."""
    _PASSES.pop(name, None)


def all_passes() -> list[PassInfo]:
    """Every registered pass, default pipeline order first."""
    order = {n: i for i, n in enumerate(DEFAULT_PIPELINE)}
    return sorted(_PASSES.values(), key=lambda p: (order.get(p.name, 99), p.name))


def get_pass(name: str) -> PassInfo:
    """Look up a pass.

    Raises:
        UsageError: unknown pass name (suggests near names).
    """
    if name not in _PASSES:
        raise unknown_name("pass", name, _PASSES, "edgec passes list")
    return _PASSES[name]


def resolve_pipeline(spec: str | list[PassCall] | None) -> list[PassCall]:
    """Turn ``--passes`` (``default``, ``none``, ``a,b(k=v)`` or a pipeline file) into pass calls.

    Raises:
        UsageError: an unknown pass or option, a bad value, an unreadable pipeline file.
    """
    return parse_pipeline(spec, DEFAULT_PIPELINE, get_pass)
