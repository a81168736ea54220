"""Exception types of edgec and the exit codes the CLI maps them to.

Every error a user can cause carries a one-line ``message`` (what is wrong) and
a ``hint`` (how to fix it). The CLI prints ``error: <message> (<hint>)`` and
exits with the class's ``exit_code``; tracebacks appear only with ``--debug``.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterable


class EdgecError(Exception):
    """Base class of every error edgec reports to a user.

    Args:
        message: What is wrong, one line.
        hint: How to fix it, one line (optional).
    """

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        """The message and hint joined on one line, as the CLI prints them."""
        text = " ".join(self.message.split())
        if self.hint:
            text += f" ({' '.join(self.hint.split())})"
        return text


class UsageError(EdgecError):
    """Bad command-line input: unknown model or target, malformed ``--input-shape``."""

    exit_code = 2


class BudgetError(UsageError):
    """The model does not fit the target's memory (a microcontroller's flash or SRAM): the message gives
    the budget, the need and the largest tensor; smaller model options fix it (exit code 2, as usage)."""


class ModelError(EdgecError):
    """The input model is missing, unreadable, truncated or not valid ONNX."""

    exit_code = 3


class UnsupportedOpError(EdgecError):
    """An operator the compiler cannot import or lower."""

    exit_code = 4


class ToolchainError(EdgecError):
    """A compiler, cross toolchain or system tool is missing."""

    exit_code = 5


class VerificationError(EdgecError):
    """The compiled artifact does not compute what the source model computes."""

    exit_code = 6


class CompilerError(EdgecError):
    """The code generator failed on a kernel and no fallback compiled it (a compiler bug, not the model's)."""

    exit_code = 8


class DeviceError(EdgecError):
    """A device (local emulator, RPC server or tracker) is unreachable or failed."""

    exit_code = 7


def unknown_name(kind: str, name: str, known: Iterable[str], list_cmd: str) -> UsageError:
    """Build the error for an unknown registry name, suggesting the nearest names.

    Args:
        kind: What was looked up ("model", "target", "pass"...).
        name: The name the user gave.
        known: Every valid name.
        list_cmd: The command that lists valid names.
    """
    known = sorted(known)
    near = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return UsageError(f"unknown {kind} '{name}'", f"{hint}see `{list_cmd}`")


# --------------------------------------------------------------------------- interrupts

_interrupted = threading.Event()


def on_interrupt(signum, frame) -> None:  # noqa: ARG001  a signal handler's signature
    """SIGINT/SIGTERM handler: remember the interrupt, then raise ``KeyboardInterrupt``.

    TVM converts an exception raised inside a Python callback it calls (a pass, a schedule
    rule) into its own error, which a fallback path may catch; the flag makes the interrupt
    survive that (:func:`raise_if_interrupted`).
    """
    _interrupted.set()
    raise KeyboardInterrupt


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if the user interrupted, even if something swallowed it since."""
    if _interrupted.is_set():
        raise KeyboardInterrupt


def clear_interrupt() -> None:
    """Forget an earlier interrupt (a new command starts)."""
    _interrupted.clear()
