"""A kernel the code generator cannot compile does not sink the build.

When LLVM or TVM fails on the module, each fused kernel is compiled alone to find
the ones that fail. Those are compiled again, alone, for a generic CPU of the same
architecture (``x86-64-v2`` / ``generic``: no AVX2/AVX-512 or target-specific code
paths), and ``main`` calls them as external functions of a module linked into the
same library; every other kernel keeps the target's CPU. Seen with TVM 0.27 on AVX2
CPUs (``znver3``, ``haswell``): an average pool after an end-only Pad makes TVM emit a
``shufflevector`` the LLVM verifier rejects.
"""

from __future__ import annotations

from typing import Any

from edgec.errors import raise_if_interrupted

#: Generic CPUs per LLVM architecture (the first word of the triple).
GENERIC_CPU = {"x86_64": "x86-64-v2", "aarch64": "generic", "arm": "generic", "riscv64": "generic-rv64"}


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def failing_kernels(fused, target) -> dict[str, str]:
    """``{kernel name: reason}`` for each fused PrimFunc that does not compile alone for ``target``,
    as the build compiles it (with the default schedule where one applies)."""
    import tvm

    from edgec.backends.tvm.default_schedule import default_schedule
    from edgec.tvm_setup.capture import captured_fds

    failing = {}
    for gv, func in fused.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        if target.kind.name == "llvm":
            func = default_schedule(func, target) or func
        try:
            with captured_fds():
                tvm.tirx.build(tvm.IRModule({gv.name_hint: func.with_attr("global_symbol", gv.name_hint)}),
                               target=target)
        except Exception as exc:  # noqa: BLE001  LLVM verifier errors, TVM internal errors
            raise_if_interrupted()
            failing[gv.name_hint] = _first_line(exc)
    return failing


def fallback_target(target_dict: dict[str, Any]) -> dict[str, Any]:
    """The target with a generic CPU of the same architecture and no extra features."""
    arch = target_dict.get("mtriple", "x86_64").split("-")[0]
    out = {k: v for k, v in target_dict.items() if k not in ("mcpu", "mattr")}
    out["mcpu"] = GENERIC_CPU.get(arch, "generic")
    return out


def split_out(fused, names: set[str], target) -> tuple[Any, list]:
    """``fused`` with the kernels ``names`` called as external functions, and those kernels built alone.

    Returns:
        ``(module without the kernels, [runtime module per kernel built for target])``.
    """
    import tvm
    from tvm import relax
    from tvm.relax.expr_functor import PyExprMutator, mutator

    call_tir = tvm.ir.Op.get("relax.call_tir")
    gvs = {gv for gv, _ in fused.functions_items() if gv.name_hint in names}

    @mutator
    class _Extern(PyExprMutator):
        def visit_call_(self, call):
            call = super().visit_call_(call)
            if call.op == call_tir and call.args[0] in gvs:
                return relax.call_dps_packed(relax.ExternFunc(call.args[0].name_hint), call.args[1], call.ty_args[0])
            return call

    rewriter = _Extern(fused)
    for gv, func in fused.functions_items():
        if isinstance(func, relax.Function):
            rewriter.builder_.update_func(gv, rewriter.visit_expr(func))
    rewritten = rewriter.builder_.get()
    kept = tvm.IRModule({gv: f for gv, f in rewritten.functions_items() if gv not in gvs}, attrs=fused.attrs)
    built = [tvm.tirx.build(tvm.IRModule({gv.name_hint: fused[gv].with_attr("global_symbol", gv.name_hint)}),
                            target=target) for gv in gvs]
    return kept, built
