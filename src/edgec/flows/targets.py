"""``edgec targets list``: the deployment targets, as data (``src/edgec/targets/*.json``)."""

from __future__ import annotations

from edgec.targets import TargetSpec, list_targets


def targets() -> list[TargetSpec]:
    """Every shipped target, validated against ``target.schema.json`` (``host`` with this machine's facts)."""
    return list_targets()
