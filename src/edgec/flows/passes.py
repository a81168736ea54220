"""``edgec passes list``: every graph pass with what it matches, refuses, takes and guarantees."""

from __future__ import annotations

from dataclasses import MISSING, dataclass

from edgec.passes import DEFAULT_PIPELINE, all_passes, option_fields


@dataclass
class PassDescription:
    """One pass as ``edgec passes list`` shows it.

    Attributes:
        name, matches, preconditions, equivalence, source: The registration's fields, as text.
        options: ``name: type = default — help`` per option.
    """

    name: str
    matches: str
    preconditions: str
    options: list[str]
    equivalence: str
    source: str


def passes() -> tuple[list[PassDescription], list[str]]:
    """Every registered pass, and the default pipeline's pass names."""
    out = [PassDescription(p.name, p.matches, p.preconditions,
                           [f"{f.name}: {f.type_words}" + ("" if f.default is MISSING else f" = {f.default}")
                            + (f" — {f.help}" if f.help else "") for f in option_fields(p.options)],
                           p.equivalence.describe(), p.source) for p in all_passes()]
    return out, list(DEFAULT_PIPELINE)
