"""One flow per ``edgec`` command: the work, callable from Python (``edgec.flows.<verb>``).

``build``, ``split``, ``tune``, ``profile``, ``run``, ``serve``, ``memory``, ``merge_table``,
``depth_compress``, ``zoo``, ``targets``, ``passes``, ``report``, ``device``. Every artifact is laid out
by one assembler (:func:`edgec.flows.assemble.assemble`) over the parts (:mod:`edgec.flows.parts`); the
model's way in (export or load, frontend, passes) is :func:`edgec.flows.lower.lower`, and the options and
their checks before any work are :mod:`edgec.flows.request`.
"""
