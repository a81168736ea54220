"""Lowering backends. Only :mod:`edgec.backends.tvm` exists; it is the one package that imports TVM."""
