"""The ``edgec`` command line: the typer app, its commands, and :func:`main`.

Each command is one module of this package (``cli/<verb>.py``: flags, checks that need no work,
printing) over one flow (``edgec.flows.<verb>``: the work, callable from Python); this module
registers them. :func:`main` maps :class:`edgec.errors.EdgecError` subclasses to one line on
stderr and a distinct exit code; tracebacks only with ``--debug`` (anywhere on the line).
"""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import sys
from typing import Annotated

import click
import typer
from rich.markup import escape

from edgec.cli import (build, depth_compress, device, memory, merge_table, passes, profile, quantize, report, run, serve,
                       split)
from edgec.cli import targets, tune, zoo
from edgec.cli.console import err_console
from edgec.errors import EdgecError, clear_interrupt, on_interrupt, raise_if_interrupted
from edgec.scratch import run_scratch

EXIT_CODES = ("Exit codes: 0 ok, 2 usage (a wrong flag, name or value), 3 model file, 4 unsupported operator, "
              "5 missing toolchain, 6 verification failed, 7 device, 8 compiler failure on a kernel (a TVM/LLVM "
              "bug), 70 a bug of edgec (please report it), 130 interrupted. --debug (anywhere) shows tracebacks.")
app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="edgec: compile vision models for edge devices with TVM, verified against onnxruntime.",
                  epilog=EXIT_CODES)
zoo_app = typer.Typer(no_args_is_help=True, help="The model zoo.")
targets_app = typer.Typer(no_args_is_help=True, help="Deployment targets.")
app.add_typer(zoo_app, name="zoo")
passes_app = typer.Typer(no_args_is_help=True, help="Graph passes.")
report_app = typer.Typer(no_args_is_help=True, help="Reports.")
device_app = typer.Typer(no_args_is_help=True, help="Devices: an emulated board and a tracker for fleets.")
app.add_typer(report_app, name="report")
app.add_typer(device_app, name="device")
app.add_typer(targets_app, name="targets")
app.add_typer(passes_app, name="passes")
_STATE = {"debug": False}

app.command()(build.build)
app.command()(memory.memory)
app.command()(quantize.quantize)
app.command("depth-compress")(depth_compress.depth_compress_cmd)
app.command("merge-table")(merge_table.merge_table_cmd)
app.command()(serve.serve)
app.command()(split.split)
app.command()(tune.tune)
app.command()(profile.profile)
app.command()(run.run)
report_app.command("compare")(report.report_compare)
device_app.command("emulate")(device.device_emulate)
device_app.command("tracker")(device.device_tracker)
zoo_app.command("list")(zoo.zoo_list)
zoo_app.command("digits")(zoo.zoo_digits)
targets_app.command("list")(targets.targets_list)
passes_app.command("list")(passes.passes_list)


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", metavar="", help="Show tracebacks and TVM's output.")] = False,
          verbose: Annotated[bool, typer.Option("--verbose", "-v", metavar="",
                                                help="Log progress details.")] = False) -> None:
    _STATE["debug"] = debug
    level = logging.DEBUG if debug else (logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


#: Flags of the root command, accepted anywhere on the command line.
_GLOBAL_FLAGS = ("--debug", "--verbose", "-v")


def _value_options() -> set[str]:
    """Option names (of every subcommand) that take a value: a global flag right after one is its value."""
    cmd = typer.main.get_command(app)
    names: set[str] = set()

    def walk(c) -> None:
        for p in getattr(c, "params", []):
            if getattr(p, "param_type_name", "") == "option" and not p.is_flag and not getattr(p, "count", False):
                names.update(p.opts)
        for sub in getattr(c, "commands", {}).values():
            walk(sub)

    try:
        walk(cmd)
    except Exception:  # noqa: BLE001  a click/typer internals change must not break the CLI
        pass
    return names


def _globals_first(argv: list[str]) -> list[str]:
    """Move ``--debug`` and ``--verbose``/``-v`` given after the subcommand to the front (not when one
    is the value of the option before it, e.g. ``--name --debug``)."""
    if not any(a in _GLOBAL_FLAGS for a in argv[1:]):
        return argv
    takes_value = _value_options()
    front, rest = [], []
    for i, a in enumerate(argv):
        if a in _GLOBAL_FLAGS and "--" not in argv[:i] and not (i and argv[i - 1] in takes_value):
            front.append(a)
        else:
            rest.append(a)
    return front + rest


# typer >= 0.16 vendors click (typer._click): catch both its exceptions and click's.
_EXITS = (click.exceptions.Exit, typer.Exit)
_ABORTS = (click.exceptions.Abort, typer.Abort)
_USAGE_ERRORS = (click.ClickException, typer.TyperException)


def main(argv: list[str] | None = None) -> int:
    """Console entry point. Returns the exit code (also via ``sys.exit``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    argv = _globals_first(argv)
    leading = []
    for a in argv:
        if not a.startswith("-"):
            break
        leading.append(a)
    debug = "--debug" in leading or os.environ.get("EDGEC_DEBUG") == "1"
    logs = tempfile.gettempdir()  # the debug log outlives the command's scratch folder
    with run_scratch():
        code = _run(argv, debug, logs)
    sys.exit(code)


def _run(argv: list[str], debug: bool, logs: str) -> int:
    """Run one command; its exit code."""
    clear_interrupt()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_interrupt)
    code = 0
    try:
        # Non-standalone typer returns the exit code of Exit (130 for KeyboardInterrupt).
        rv = app(args=argv, prog_name="edgec", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
        if code == 130:
            err_console.print("interrupted; nothing half-written was left behind")
    except _EXITS as exc:
        code = getattr(exc, "exit_code", 0)
    except _ABORTS:
        err_console.print("aborted")
        code = 130
    except _USAGE_ERRORS as exc:  # a flag typo, a missing argument, a bad value: the user's, not ours
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "edgec"
        if where == "edgec":  # name the subcommand when click did not
            words = [a for a in argv if not a.startswith("-")][:2]
            known = set(typer.main.get_command(app).commands) if hasattr(typer.main.get_command(app), "commands") \
                else set()
            if words and words[0] in known:
                where = "edgec " + " ".join(w for w in words if w in known or words.index(w) == 0)
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if not message.strip():  # `edgec` alone: the help was printed
            return 0
        err_console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))} (see `{escape(where)} --help`)",
                          highlight=False, soft_wrap=True)
        code = getattr(exc, "exit_code", 2) or 2
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing half-written was left behind")
        code = 130
    except EdgecError as exc:
        if debug:
            err_console.print_exception()
            err_console.print(f"the whole log (every cause, untruncated): {_debug_log(exc, logs)}", highlight=False,
                              soft_wrap=True)
        code = _interrupted_code()
        if code is None:
            err_console.print(f"[bold red]error:[/] {escape(exc.one_line())}", highlight=False, soft_wrap=True)
            code = exc.exit_code
    except Exception as exc:  # a bug: say so in one line
        if debug:
            err_console.print_exception()
        code = _interrupted_code()
        if code is None:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(first[:200])} "
                              "(rerun with --debug and report it)", highlight=False, soft_wrap=True)
            code = 70
    return code


def _debug_log(exc: BaseException, folder: str) -> str:
    """Write ``exc`` and its causes, whole (TVM's IR dumps included), to a file in ``folder``; its path."""
    import traceback

    fd, path = tempfile.mkstemp(prefix="edgec-debug-", suffix=".log", dir=folder)
    with os.fdopen(fd, "w") as f:
        f.write("".join(traceback.format_exception(exc)))
    return path


def _interrupted_code() -> int | None:
    """130 if the user interrupted (a library may have turned the Ctrl-C into an error), else None."""
    try:
        raise_if_interrupted()
    except KeyboardInterrupt:
        err_console.print("interrupted; nothing half-written was left behind")
        return 130
    return None


__all__ = ["app", "main"]
