"""Relax -> a static program: planned storages, tensors, constants and kernel calls; TIR -> C.

The TVM backend's import and fusion (:func:`edgec.backends.tvm.api.import_model`,
:func:`edgec.backends.tvm.pipeline.fused_module`) are reused as they are; this module then runs the
Relax lowering up to and including ``StaticPlanBlockMemory`` (the first passes of
:func:`edgec.backends.tvm.pipeline.lower_and_finalize`) and reads ``main``'s bindings:

* ``R.memory.alloc_storage`` -- one planned storage (bytes), laid out back to back in one arena;
* ``R.memory.alloc_tensor(storage, offset, shape, dtype)`` -- a tensor at a byte offset of a storage;
* ``R.builtin.alloc_tensor`` -- a tensor TVM leaves unplanned (the model's outputs): its own arena region;
* ``R.reshape`` and plain variable bindings -- views of the same bytes;
* calls of a TIR ``PrimFunc`` with destination-passing arguments -- one kernel call each;
* constants (weights, folded at compile time) -- ``const`` arrays.

The kernels (the module's PrimFuncs) are compiled by TVM's ``"c"`` code generator with
assertions off (``tirx.disable_assert``: the C shrinks about 8x, ``docs/tvm-0.27.md``,
"Microcontrollers") and 32-bit index arithmetic where TVM can narrow it
(``ForceNarrowIndexToInt32``). Source: TVM's Relax VM lowering, ``relax/transform/static_plan_block_memory.cc``.
"""

from __future__ import annotations

import hashlib

import logging
import math
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgec.errors import UnsupportedOpError

log = logging.getLogger(__name__)

#: Byte alignment of every storage in the arena and of every constant (a cache line of a Cortex-M7 is 32 bytes).
ALIGN = 32


def align(n: int, to: int = ALIGN) -> int:
    """``n`` rounded up to a multiple of ``to``."""
    return (int(n) + to - 1) // to * to


@dataclass
class Tensor:
    """A tensor the runner passes to kernels (a ``DLTensor``).

    Attributes:
        shape: Shape (row-major, as the kernel indexes it).
        dtype: NumPy dtype name (``float32``).
        where: ``"storage"`` (planned storage number ``index``), ``"unplanned"`` (an arena region of
            its own, number ``index``: what TVM leaves unplanned, the model's outputs), ``"const"``
            (constant number ``index``) or ``"input"`` (model input number ``index``).
        index: See ``where``.
        offset: Byte offset inside the storage or region.
        buffer: The arena buffer it lives in (views share their base's; the model's inputs are arena buffers
            too), for the arena plan; -1 for constants.
    """

    shape: tuple[int, ...]
    dtype: str
    where: str
    index: int
    offset: int = 0
    buffer: int = -1

    @property
    def nbytes(self) -> int:
        """Size in bytes."""
        return int(math.prod(self.shape)) * np.dtype(self.dtype).itemsize


@dataclass
class Program:
    """``main`` of a planned Relax module as a static program.

    Attributes:
        tensors: Every tensor the calls use, by number (``t<i>`` in the runner).
        calls: ``(kernel symbol, [tensor numbers])`` in execution order.
        inputs: Tensor numbers of the model inputs, in graph order.
        outputs: Tensor numbers of the model outputs, in graph order.
        constants: Constant arrays (weights, as folded at compile time), by number.
        storages: Sizes (bytes) of the planned storages, in arena order.
        regions: Sizes (bytes) of the unplanned regions, placed after the storages.
    """

    tensors: list[Tensor] = field(default_factory=list)
    calls: list[tuple[str, list[int]]] = field(default_factory=list)
    inputs: list[int] = field(default_factory=list)
    outputs: list[int] = field(default_factory=list)
    constants: list[np.ndarray] = field(default_factory=list)
    storages: list[int] = field(default_factory=list)
    regions: list[int] = field(default_factory=list)

    buffer_offsets: list[int] = field(default_factory=list)
    arena_size: int = 0

    def plan_arena(self) -> None:
        """Place the activation buffers in one arena by their lifetimes over the kernel calls
        (:func:`edgec.backends.c.arena.greedy_by_size`); model outputs stay alive to the end. The model's
        inputs are arena buffers too, live from the start until their last reader: the application writes them
        before each run, and the model reuses their bytes once it no longer needs them (TensorFlow Lite Micro
        places its input tensors in the arena the same way)."""
        from edgec.backends.c.arena import Buffer, greedy_by_size

        count = 1 + max((t.buffer for t in self.tensors), default=-1)
        sizes, first, last = [0] * count, [len(self.calls)] * count, [-1] * count
        for t in self.tensors:
            if t.buffer >= 0:
                sizes[t.buffer] = max(sizes[t.buffer], t.nbytes)
        for step, (_, args) in enumerate(self.calls):
            for a in args:
                b = self.tensors[a].buffer
                if b >= 0:
                    first[b], last[b] = min(first[b], step), max(last[b], step)
        for o in self.outputs:
            b = self.tensors[o].buffer
            first[b], last[b] = min(first[b], len(self.calls)), len(self.calls)
        for i in self.inputs:  # written before the run: live from its start until the model has read them
            first[self.tensors[i].buffer] = 0
        buffers = [Buffer(sizes[b], first[b], max(last[b], first[b])) for b in range(count)]
        self.buffer_offsets, self.arena_size = greedy_by_size(buffers, ALIGN)

    @property
    def arena_bytes(self) -> int:
        """Size of the one activation arena (bytes), as planned by :meth:`plan_arena`."""
        return self.arena_size

    @property
    def planned_bytes(self) -> int:
        """Bytes of TVM's own storage plan (``StaticPlanBlockMemory``, aligned), for comparison."""
        return sum(align(s) for s in self.storages) + sum(align(r) for r in self.regions)

    def arena_offset(self, t: Tensor) -> int:
        """Byte offset in the arena of an activation tensor."""
        return self.buffer_offsets[t.buffer]

    @property
    def weight_bytes(self) -> int:
        """Bytes of the constants (each aligned to :data:`ALIGN`)."""
        return sum(align(c.nbytes) for c in self.constants)

    @property
    def input_bytes(self) -> int:
        """Bytes of the model's input buffers."""
        return sum(self.tensors[i].nbytes for i in self.inputs)


def c_target(spec):
    """The ``tvm.target.Target`` of an MCU target spec (``{"kind": "c", ...}``)."""
    from tvm.target import Target

    return Target(spec.tvm)


def fuse(model, spec):
    """ONNX -> Relax -> layout conversion, legalization and fusion (the TVM backend's own steps).

    Raises:
        UnsupportedOpError: an op TVM cannot import.
    """
    from edgec.backends.tvm.api import import_model
    from edgec.backends.tvm.pipeline import fused_module

    return fused_module(import_model(model), c_target(spec))


def inline_schedule(func, target) -> Any:
    """A kernel rescheduled for memory, not speed: no intermediate buffer that one element can replace.

    Element-wise producers (padding) are inlined into the kernel's main block; the element-wise
    blocks after it (bias, activation, residual add) are inlined into their readers, and the block
    writing the kernel's output is computed inside the main block's innermost spatial loop, after
    its reduction loops, so the main block's result needs one element instead of a workspace buffer. The reduction order of every output element is unchanged
    (bit-identical results). The rules are those of the TVM backend's default CPU schedule
    (:mod:`edgec.backends.tvm.default_schedule`) without parallelization or vectorization.

    Returns:
        The scheduled PrimFunc, or None when the kernel does not fit the rule or would not lower
        (it then keeps TVM's default).
    """
    from tvm import s_tir
    from tvm.s_tir.dlight.analysis import normalize_prim_func

    from edgec.backends.tvm.default_schedule import inline_around_main, lowers

    try:
        sch = s_tir.Schedule(func)
        infos = normalize_prim_func(sch)
        around = inline_around_main(sch, infos) if infos else None
        if around is None:
            return None
        main, consumers = around
        kinds, loops = main.dom_kind(), sch.get_loops(main.block_rv)
        if kinds and len(loops) == len(kinds) and not set(kinds) - {"S", "R"} and "S" in kinds:
            spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
            reduce = [lp for lp, k in zip(loops, kinds) if k == "R"]
            if reduce:
                sch.reorder(*spatial, *reduce)
            for block in consumers:
                sch.reverse_compute_at(block, spatial[-1], preserve_unit_loops=True)
            if reduce:
                sch.decompose_reduction(main.block_rv, reduce[0])
        scheduled = sch.mod["main"]
    except Exception as exc:  # noqa: BLE001  an illegal primitive: keep TVM's default
        log.debug("inline schedule failed: %s", str(exc).strip().splitlines()[-1:])
        return None
    return scheduled.with_attr("tirx.is_scheduled", True) if lowers(scheduled, target) else None


def schedule(fused, target):
    """``fused`` with every kernel given :func:`inline_schedule` where it fits.

    Returns:
        ``(module, names of the kernels rescheduled)``.
    """
    import tvm
    from tvm import tirx

    updates = {}
    for gv, func in fused.functions_items():
        if isinstance(func, tirx.PrimFunc):
            scheduled = inline_schedule(func, target)
            if scheduled is not None:
                updates[gv] = scheduled
    mod = tvm.IRModule({gv: updates.get(gv, f) for gv, f in fused.functions_items()}, attrs=fused.attrs)
    return mod, sorted(gv.name_hint for gv in updates)


def plan_memory(fused, target):
    """``fused`` lowered to destination passing with planned storage (the passes of
    :func:`edgec.backends.tvm.pipeline.lower_and_finalize` up to ``StaticPlanBlockMemory``),
    with global symbols attached to the kernels."""
    import tvm
    from tvm import relax

    from edgec.backends.tvm.pipeline import lower_and_finalize

    passes = lower_and_finalize(target)
    upto = [p.info.name for p in passes].index("StaticPlanBlockMemory") + 1
    with target:
        planned = tvm.transform.Sequential(passes[:upto])(fused)
    return relax.transform.AttachGlobalSymbol()(planned)


def _ty(var) -> tuple[tuple[int, ...], str]:
    ty = var.ty
    return tuple(int(d) for d in ty.shape), str(ty.dtype)


def _unsupported(what: str) -> UnsupportedOpError:
    return UnsupportedOpError(f"the static C runner cannot express {what} in the lowered graph",
                              "rerun with --debug and report the model")


def program(planned) -> Program:
    """Read ``main`` of a planned module (:func:`plan_memory`) as a :class:`Program`.

    Raises:
        UnsupportedOpError: a binding the static runner cannot express (a packed call, a
            non-tensor kernel argument, an output that is an input or a constant).
    """
    import tvm
    from tvm import relax

    main = planned["main"]
    prog = Program()
    tensor_of: dict[Any, Any] = {}   # relax var -> tensor number, or a tuple of them
    storage_of: dict[Any, int] = {}  # relax var -> storage number
    const_of: dict[Any, int] = {}    # constant -> tensor number
    const_by_content: dict[tuple, int] = {}  # (dtype, shape, sha256 of the bytes) -> tensor number

    buffers = iter(range(1 << 30))

    def new_tensor(shape, dtype, where, index, offset=0, buffer=None) -> int:
        if buffer is None:
            buffer = next(buffers) if where in ("storage", "unplanned") else -1
        prog.tensors.append(Tensor(tuple(shape), dtype, where, index, offset, buffer))
        return len(prog.tensors) - 1

    for i, param in enumerate(main.params):  # in the arena, as TensorFlow Lite Micro's input tensors
        prog.inputs.append(new_tensor(*_ty(param), "input", i, buffer=next(buffers)))
        tensor_of[param] = prog.inputs[-1]

    def arg(expr) -> int:
        if isinstance(expr, relax.Var) and isinstance(tensor_of.get(expr), int):
            return tensor_of[expr]
        if isinstance(expr, tvm.ir.Constant) and hasattr(expr.value, "numpy"):
            if expr not in const_of:
                value = np.ascontiguousarray(expr.value.numpy())
                # equal constants are one array in flash: the same weight reaches several kernels as separate
                # constants after TVM's per-use folding (each patch of patch_inference transposes it again)
                key = (str(value.dtype), value.shape, hashlib.sha256(value.tobytes()).digest())
                if key not in const_by_content:
                    prog.constants.append(value)
                    const_by_content[key] = new_tensor(value.shape, str(value.dtype), "const",
                                                       len(prog.constants) - 1)
                const_of[expr] = const_by_content[key]
            return const_of[expr]
        raise _unsupported(f"the kernel argument {str(expr)[:80]!r}")

    for block in main.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Var):
                tensor_of[var] = tensor_of[value]
            elif isinstance(value, relax.Tuple):
                tensor_of[var] = tuple(arg(f) for f in value.fields)
            elif isinstance(value, relax.TupleGetItem):
                tensor_of[var] = tensor_of[value.tuple_value][value.index]
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.GlobalVar):
                prog.calls.append((value.op.name_hint, [arg(a) for a in value.args]))
            elif isinstance(value, relax.Call) and isinstance(value.op, tvm.ir.Op):
                name = value.op.name
                if name == "relax.memory.alloc_storage":
                    storage_of[var] = len(prog.storages)
                    prog.storages.append(int(math.prod(int(v) for v in value.args[0].values)))
                elif name == "relax.memory.alloc_tensor":
                    tensor_of[var] = new_tensor(*_ty(var), "storage", storage_of[value.args[0]],
                                                int(value.args[1].value))
                elif name == "relax.builtin.alloc_tensor":
                    tensor_of[var] = new_tensor(*_ty(var), "unplanned", len(prog.regions))
                    prog.regions.append(prog.tensors[-1].nbytes)
                elif name == "relax.reshape":  # a view: the same bytes, another shape
                    base = prog.tensors[arg(value.args[0])]
                    tensor_of[var] = new_tensor(*_ty(var), base.where, base.index, base.offset, base.buffer)
                elif name not in ("relax.memory.kill_tensor", "relax.memory.kill_storage"):
                    raise _unsupported(f"'{name}'")
            else:
                raise _unsupported(f"a {type(value).__name__} binding")

    result = main.body.body
    for out in result.fields if isinstance(result, relax.Tuple) else [result]:
        number = tensor_of.get(out) if isinstance(out, relax.Var) else None
        if not isinstance(number, int) or prog.tensors[number].where not in ("storage", "unplanned"):
            raise UnsupportedOpError("a model output is an input or a constant (nothing computes it)",
                                     "remove that output from the model")
        prog.outputs.append(number)
    prog.plan_arena()
    return prog


@dataclass
class Kernels:
    """The compiled kernels as C.

    Attributes:
        source: C source of every kernel (TVM's packed calling convention, ``__tvm_ffi_<name>``),
            its TVM includes replaced by ``include``.
        workspace: Workspace bytes each kernel asks ``TVMBackendAllocWorkspace`` for, summed
            (each request rounded up to the shim's alignment), by kernel symbol.
        int32_indices: Whether 32-bit index narrowing was applied.
    """

    source: str
    workspace: dict[str, int]
    int32_indices: bool


#: The includes TVM's C code generator emits; replaced by the runner's own header.
_TVM_INCLUDE = re.compile(r'^#include "tvm/[^"]+"\n', re.M)


def kernels_c(planned, target, include: str) -> Kernels:
    """Compile the module's PrimFuncs with TVM's C code generator.

    Args:
        planned: The module from :func:`plan_memory`.
        target: ``tvm.target.Target`` of kind ``c``.
        include: Header name that replaces TVM's runtime includes (the runner's ``tvm_mcu.h``).

    Raises:
        UnsupportedOpError: TVM fails to lower or generate C for a kernel.
    """
    import tvm

    from edgec.tvm_setup.capture import captured_fds

    tir = tvm.IRModule({gv: f for gv, f in planned.functions_items() if isinstance(f, tvm.tirx.PrimFunc)})
    source, narrowed = None, False
    with tvm.transform.PassContext(opt_level=3, config={"tirx.disable_assert": True}):
        try:
            with captured_fds():
                narrow = tvm.tirx.transform.ForceNarrowIndexToInt32()(tir)
                source = tvm.tirx.build(narrow, target=target).inspect_source()
            narrowed = True
        except Exception as exc:  # noqa: BLE001  narrowing is an optimisation: fall back to TVM's own indices
            log.info("32-bit index narrowing failed (%s); keeping TVM's index types", str(exc).splitlines()[-1][:160])
        if source is None:
            try:
                with captured_fds():
                    source = tvm.tirx.build(tir, target=target).inspect_source()
            except Exception as exc:
                last = [ln for ln in str(exc).strip().splitlines() if ln.strip()][-1:] or [type(exc).__name__]
                raise UnsupportedOpError(f"TVM failed to generate C for the model: {last[0][:200]}",
                                         "rerun with --debug for TVM's trace") from exc
    source = exact_float_literals(_TVM_INCLUDE.sub("", source), tir)
    source = source.replace("#define TVM_EXPORTS\n", f'#include "{include}"\n', 1)
    return Kernels(source, workspace_requests(source), narrowed)


#: A float literal as TVM's C code generator prints it (``std::scientific``: 7 significant digits).
_SCRIPT_FLOAT = re.compile(r"T\.float(32|64)\(([-+0-9.eE]+|inf|-inf|nan)\)")
_FLOAT_LITERAL = re.compile(r"(?<![\w.])(-?\d\.\d{6}e[+-]\d{2,3})(f?)(?![\w.])")


def exact_float_literals(source: str, tir) -> str:
    """``source`` with each float literal TVM printed to 7 significant digits replaced by the exact value as a
    C99 hexadecimal float.

    TVM's C code generator prints a float immediate with ``std::scientific`` (``2.352941e-02``), which is not
    the value for either float32 (9 digits needed) or float64 (17): a scale written as an immediate
    (``0.023529412`` = 6/255) became another number, and the int8 kernels in C drifted two steps from the same
    kernels compiled by LLVM. The exact values are read from the kernels' TVMScript (``T.float32(...)`` and
    ``T.float64(...)`` print every digit) and matched by their printed form; a printed form two different values share is left as it is (and logged).
    """
    import tvm

    exact: dict[str, str | None] = {}
    for _, func in tir.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc):
            continue
        for bits, number in _SCRIPT_FLOAT.findall(func.script()):  # TVMScript prints them exactly
            value = float(number)
            if not math.isfinite(value):
                continue
            if bits == "32":
                value = float(np.float32(value))
            text = f"{value:e}" + ("f" if bits == "32" else "")
            literal = float.hex(value) + ("f" if bits == "32" else "")
            exact[text] = literal if exact.get(text, literal) == literal else None
    clashes = [k for k, v in exact.items() if v is None]
    if clashes:
        log.info("float literals printed alike for different values, left as printed: %s", clashes[:5])

    def replace(m: re.Match) -> str:
        return exact.get(m.group(1) + m.group(2)) or m.group(0)

    return _FLOAT_LITERAL.sub(replace, source)


_FUNC = re.compile(r"^TVM_DLL int32_t __tvm_ffi_(\w+)\(void\* self_handle.*?\) \{$", re.M)
_ALLOC = re.compile(r"TVMBackendAllocWorkspace\(\d+, \w+, \(uint64_t\)(\d+)ULL")


def workspace_requests(source: str, alignment: int = ALIGN) -> dict[str, int]:
    """Workspace bytes each kernel of TVM's C output requests, summed over its requests.

    Every request is rounded up to ``alignment``; the sum is what the LIFO workspace needs
    when all of a kernel's buffers are alive at once (TVM allocates them at the top of the
    kernel and frees them at its end), so it is an upper bound of the kernel's peak.

    Raises:
        UnsupportedOpError: a request whose size is not a constant.
    """
    heads = list(_FUNC.finditer(source))
    out: dict[str, int] = {}
    for i, head in enumerate(heads):
        body = source[head.end(): heads[i + 1].start() if i + 1 < len(heads) else len(source)]
        sizes = [int(m.group(1)) for m in _ALLOC.finditer(body)]
        if len(sizes) != body.count("TVMBackendAllocWorkspace("):
            raise UnsupportedOpError(f"kernel {head.group(1)} asks for a workspace whose size is known only at "
                                     "run time; the static runner cannot size it", "report the model")
        out[head.group(1)] = sum(align(n, alignment) for n in sizes)
    return out
