"""Pass options and pipelines: ``--passes 'fold_batchnorm,patch_inference(grid=4,stop=blocks.3)'``.

A pass declares its options as a frozen dataclass (typed fields with defaults,
``metadata={"help": ...}``; ``__post_init__`` may raise ``ValueError`` to refuse a
combination). A pipeline is a list of :class:`PassCall` -- a pass and its
validated options -- given as

* a string: comma-separated entries ``name`` or ``name(key=value, ...)``; ``default``
  expands to the default pipeline, ``none`` alone means no pass;
* a pipeline file (``.toml`` or ``.json``): a list of entries under ``pass``, each a
  table with ``name`` and the options as typed values::

      [[pass]]
      name = "default"

      [[pass]]
      name = "patch_inference"
      grid = 4
      stop = "blocks.3"

Option types: ``int``, ``float``, ``bool``, ``str``, ``Literal[...]`` (a choice),
``tuple[int, ...]`` / ``list[...]`` (written ``[1,2]`` or ``1x2`` on the command line),
and ``X | None``. Every mistake is a one-line :class:`~edgec.errors.UsageError`
that lists the valid options.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from edgec.errors import UsageError



class PassInfo(typing.Protocol):
    """What a pass call needs of its registration (:class:`edgec.passes.registry.PassInfo`)."""

    name: str
    options: type | None
    equivalence: Any
    factory: Any

_NAME = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*(?:\((.*)\))?\s*$", re.S)


@dataclass(frozen=True)
class OptionField:
    """One declared option: name, Python type, default and help text."""

    name: str
    type: Any
    default: Any
    help: str

    @property
    def type_words(self) -> str:
        """The type in plain words (``integer``, ``one of exact, latency``...)."""
        return type_words(self.type)


def option_fields(options_cls: type | None) -> list[OptionField]:
    """The options a pass declares (empty when it has none)."""
    if options_cls is None:
        return []
    hints = typing.get_type_hints(options_cls)
    out = []
    for f in dataclasses.fields(options_cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING)
        out.append(OptionField(f.name, hints[f.name], default, str(f.metadata.get("help", ""))))
    return out


def _optional(tp) -> tuple[Any, bool]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return args[0], True
    return tp, False


def type_words(tp) -> str:
    """Plain words for an option type."""
    inner, optional = _optional(tp)
    if get_origin(inner) is Literal:
        words = "one of " + ", ".join(str(a) for a in get_args(inner))
    elif get_origin(inner) in (tuple, list):
        args = [a for a in get_args(inner) if a is not Ellipsis]
        words = f"list of {type_words(args[0])}s" if args else "list"
    else:
        words = {int: "integer", float: "number", bool: "true/false", str: "text"}.get(inner, getattr(
            inner, "__name__", str(inner)))
    return words + (" or none" if optional else "")


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def split_top(text: str, sep: str = ",") -> list[str]:
    """Split at ``sep`` outside brackets and quotes.

    Raises:
        ValueError: unbalanced brackets or quotes.
    """
    parts, depth, quote, cur = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
            if depth < 0:
                raise ValueError("unbalanced ')' or ']'")
        elif ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
            continue
        cur.append(ch)
    if depth or quote:
        raise ValueError("unbalanced brackets or quotes")
    parts.append("".join(cur))
    return parts


def convert(value: Any, tp) -> Any:
    """Convert a command-line string or a file's typed value to option type ``tp``.

    Raises:
        ValueError: the value does not fit the type (the message says what was expected).
    """
    inner, optional = _optional(tp)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))):
        return None
    want = type_words(inner)
    if get_origin(inner) is Literal:
        choices = get_args(inner)
        v = _unquote(value) if isinstance(value, str) else value
        for c in choices:
            if v == c or (isinstance(v, str) and str(c) == v):
                return c
        raise ValueError(f"expected {want}")
    if get_origin(inner) in (tuple, list):
        args = [a for a in get_args(inner) if a is not Ellipsis]
        elem = args[0] if args else str
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("[") and text.endswith("]"):
                text = text[1:-1]
            items = [t for t in (split_top(text) if "," in text else re.split(r"x", text)) if t.strip()]
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise ValueError(f"expected {want}")
        conv = [convert(i, elem) for i in items]
        return tuple(conv) if get_origin(inner) is tuple else conv
    if inner is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.strip().lower() in ("true", "1", "yes", "on")
        raise ValueError("expected true or false")
    if inner is int:
        if isinstance(value, bool):
            raise ValueError("expected an integer")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError("expected an integer") from None
    if inner is float:
        if isinstance(value, bool):
            raise ValueError("expected a number")
        try:
            number = float(value if not isinstance(value, str) else value.strip())
        except (TypeError, ValueError):
            raise ValueError("expected a number") from None
        if not math.isfinite(number):  # nan passes every range check; inf none is meant to allow
            raise ValueError("expected a finite number")
        return number
    if inner is str:
        if isinstance(value, str):
            return _unquote(value)
        raise ValueError("expected text")
    raise ValueError(f"unsupported option type {tp!r}")


@dataclass(frozen=True)
class PassCall:
    """A pass with its validated options: one entry of a pipeline.

    Attributes:
        info: The pass declaration.
        options: Its options dataclass instance, or None when it declares none.
    """

    info: PassInfo
    options: Any = None

    @property
    def name(self) -> str:
        return self.info.name

    def options_dict(self) -> dict[str, Any]:
        """Option values by name (all of them, defaults included)."""
        return dataclasses.asdict(self.options) if self.options is not None else {}

    def label(self) -> str:
        """``name`` or ``name(k=v,...)`` with the options that differ from their defaults."""
        changed = [f"{f.name}={_show(getattr(self.options, f.name))}" for f in option_fields(self.info.options)
                   if getattr(self.options, f.name) != f.default]
        return f"{self.name}({','.join(changed)})" if changed else self.name

    def create(self):
        """A fresh pass object (``onnx_ir.passes.PassBase``)."""
        return self.info.factory(self.options) if self.info.options is not None else self.info.factory()


def _show(v: Any) -> str:
    if isinstance(v, (tuple, list)):
        return "[" + ",".join(_show(x) for x in v) + "]"
    return str(v).lower() if isinstance(v, bool) else str(v)


def make_call(info: PassInfo, raw: dict[str, Any], where: str = "--passes") -> PassCall:
    """Validate ``raw`` option values (strings or typed) against the pass's declaration.

    Raises:
        UsageError: an unknown option, a value of the wrong type, a missing required
            option, or a combination the pass refuses; one line listing the valid options.
    """
    fields = {f.name: f for f in option_fields(info.options)}
    valid = ", ".join(f"{f.name} ({f.type_words})" for f in fields.values()) or "none"
    for key in raw:
        if key not in fields:
            raise UsageError(f"{where}: pass '{info.name}' has no option '{key}'", f"its options: {valid}")
    if info.options is None:
        return PassCall(info)
    values = {}
    for key, value in raw.items():
        try:
            values[key] = convert(value, fields[key].type)
        except ValueError as exc:
            raise UsageError(f"{where}: option {info.name}({key}={value}) is invalid: {exc}",
                             f"its options: {valid}") from None
    missing = [f.name for f in fields.values() if f.default is dataclasses.MISSING and f.name not in values]
    if missing:
        raise UsageError(f"{where}: pass '{info.name}' needs option '{missing[0]}'", f"its options: {valid}")
    try:
        return PassCall(info, info.options(**values))
    except (ValueError, TypeError) as exc:
        raise UsageError(f"{where}: pass '{info.name}': {exc}", f"its options: {valid}") from None


def _entries_from_text(spec: str) -> list[tuple[str, dict[str, Any]]]:
    try:
        items = split_top(spec)
    except ValueError as exc:
        raise UsageError(f"--passes '{spec}' cannot be read: {exc}",
                         "write name or name(key=value,...), separated by commas") from None
    if any(not s.strip() for s in items):
        raise UsageError(f"--passes '{spec}' has an empty entry", "separate pass names with single commas")
    out = []
    for item in items:
        m = _NAME.match(item)
        if not m:
            raise UsageError(f"--passes entry '{item.strip()}' is not name or name(key=value,...)",
                             "e.g. --passes 'default,NAME(key=value)'; see `edgec passes list`")
        raw: dict[str, Any] = {}
        for arg in (split_top(m.group(2)) if m.group(2) and m.group(2).strip() else []):
            key, eq, value = arg.partition("=")
            if not eq or not re.fullmatch(r"\s*[A-Za-z_]\w*\s*", key):
                raise UsageError(f"--passes entry '{item.strip()}': '{arg.strip()}' is not key=value",
                                 "e.g. NAME(key=value,key=value); see `edgec passes list`")
            raw[key.strip()] = value.strip()
        out.append((m.group(1), raw))
    return out


def _entries_from_file(path: Path) -> list[tuple[str, dict[str, Any]]]:
    where = f"pipeline file {path}"
    try:
        text = path.read_text()
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"{where} cannot be read: {' '.join(str(exc).split())[:160]}",
                         "write [[pass]] tables (TOML) or {\"pass\": [...]} (JSON)") from None
    entries = data.get("pass") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise UsageError(f"{where} has no list of passes under 'pass'", "write [[pass]] tables with a name each")
    out = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            out.append((entry, {}))
        elif isinstance(entry, dict) and isinstance(entry.get("name"), str):
            out.append((entry["name"], {k: v for k, v in entry.items() if k != "name"}))
        else:
            raise UsageError(f"{where}: entry {i + 1} has no name", "each entry needs name = \"PASS\"")
    return out


def is_pipeline_file(spec: str) -> bool:
    """Whether ``--passes`` names a pipeline file (``.toml``/``.json``, or ``@FILE``)."""
    return spec.startswith("@") or spec.endswith((".toml", ".json"))


def parse_pipeline(spec: str | list[PassCall] | None, default: list[str], lookup) -> list[PassCall]:
    """Turn ``--passes`` into pass calls.

    Args:
        spec: ``default``, ``none``, entries ``a,b(k=v)``, a pipeline file, or already-made calls.
        default: Names of the default pipeline (what ``default`` expands to).
        lookup: ``name -> PassInfo`` (raises UsageError for unknown names).

    Raises:
        UsageError: unknown pass or option, bad value, unreadable pipeline file.
    """
    if isinstance(spec, list):
        return spec
    if spec is None:
        return []
    spec = spec.strip()
    if not spec:
        raise UsageError("--passes is empty", "give default, none, or pass names")
    if spec == "none":
        return []
    if is_pipeline_file(spec):
        path = Path(spec[1:] if spec.startswith("@") else spec)
        if not path.is_file():
            raise UsageError(f"pipeline file {path} not found", "give a .toml or .json file, or pass names")
        entries = _entries_from_file(path)
        where = f"pipeline file {path}"
    else:
        entries = _entries_from_text(spec)
        where = "--passes"
    calls = []
    if any(name == "none" for name, _ in entries) and len(entries) > 1:
        raise UsageError(f"{where}: 'none' cannot be combined with passes", "give none alone, or only pass names")
    for name, raw in entries:
        if name in ("default", "none"):
            if raw:
                raise UsageError(f"{where}: '{name}' takes no options", "give options to single passes")
            if name == "default":
                calls.extend(make_call(lookup(n), {}, where) for n in default)
            continue
        calls.append(make_call(lookup(name), raw, where))
    return calls
