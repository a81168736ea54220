"""Split computing: cut a model into a device head and a server tail.

:func:`~edgec.split.partition.split_model` cuts at one tensor;
:func:`~edgec.split.partition.valid_cuts` lists the tensors where a cut is valid
(a single tensor crosses); :func:`~edgec.split.cuts.cut_table` gives each cut's bytes and the
MACs and parameters on either side. Building a head/tail artifact is :func:`edgec.flows.split.build_split`.
"""

from edgec.split.cuts import cut_table
from edgec.split.partition import split_model, valid_cuts

__all__ = ["cut_table", "split_model", "valid_cuts"]
