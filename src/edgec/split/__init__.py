"""Split computing: cut a model into a device head and a server tail.

:func:`~edgec.split.partition.split_model` cuts at one tensor;
:func:`~edgec.split.partition.valid_cuts` lists the tensors where a cut is valid
(a single tensor crosses). Building the two parts is :func:`edgec.build.build_parts`.
"""

from edgec.split.partition import split_model, valid_cuts

__all__ = ["split_model", "valid_cuts"]
