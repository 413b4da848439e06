"""tenants.yaml as validated the last time, kept in ``.tenantctl/cache/config-v1.json``.

Reading tenants.yaml needs PyYAML and pydantic, and importing them and building
pydantic's validators is about half of a run's start-up (some 150 ms of CPU on
a small machine, on every nightly run and every ``status``). What validation
returns depends only on the file's text and on the tool, so it is kept: keyed
by the text's sha256, tenantctl's source and pydantic's version. A run whose
file is unchanged builds the :mod:`~tenantctl.config_schema` dataclasses from
the entry without importing either.

- The entry is not trusted blindly: :func:`decode` checks every value's type
  against the dataclasses' annotations and runs each field's own check again
  (the same :class:`~tenantctl.config_schema.Check` functions and limits, which
  are pure), so a hand-edited entry cannot give a run a value the file could not.
- It holds what the file says, with defaults filled in: DSNs as written,
  normally ``${VAR}`` references that load_project expands later. A file whose
  DSN carries a password in clear text is never cached, so the cache is never
  another copy of a secret. The file is created 0600.
- Corrupt, foreign (another tool version) or stale entries are ignored and
  rewritten; the directory is safe to delete; a read-only project keeps nothing.
  The checks across fields (config.load_project's) run on every load.
"""

from __future__ import annotations

import hashlib
import types
import typing
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from enum import Enum
from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, get_args, get_origin

from .config_schema import Check, ConfigFile
from .parse_cache import CACHE_DIR, installed_version, read_json, source_digest, write_json
from .redact import redact

_FILE = "config-v1.json"
T = TypeVar("T")


class StaleEntry(ValueError):
    """The entry does not decode to what validation would give: ignore it."""


def cache_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", errors="surrogatepass")).hexdigest()


@lru_cache(maxsize=1)
def _identity() -> str:
    return f"{source_digest()}:pydantic-{installed_version('pydantic')}"


def load(state_dir: Path, text: str) -> ConfigFile | None:
    """The validated file from the cache, or None (missing, stale, foreign, corrupt)."""
    doc = read_json(state_dir / CACHE_DIR, _FILE, _identity())
    if doc is None or doc.get("key") != cache_key(text):
        return None
    try:
        config = decode(ConfigFile, doc.get("config"))
    except (StaleEntry, TypeError, ValueError, KeyError):
        return None
    return config if isinstance(config, ConfigFile) else None


def store(state_dir: Path, text: str, config: ConfigFile) -> None:
    """Keep ``config`` (what validating ``text`` gave) unless it holds a password."""
    dsns = [s.dsn for s in config.servers.values()] + [config.shared.probe_dsn or ""]
    if any(redact(dsn) != dsn for dsn in dsns):
        return
    write_json(state_dir / CACHE_DIR, _FILE, _identity(),
               {"key": cache_key(text), "config": encode(config)})


def encode(value: object) -> object:
    """A dataclass tree as JSON data (tuples as lists, enums as their values)."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: encode(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, (tuple, list)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    if isinstance(value, Enum):
        return value.value
    return value


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls, include_extras=True)


def decode(tp: Any, data: object) -> Any:
    """``data`` (from :func:`encode`) as a value of type ``tp``, every check run
    again; raises StaleEntry when anything does not fit."""
    checks: list[Check] = []
    while get_origin(tp) is Annotated:
        tp, *meta = get_args(tp)
        checks[:0] = [m for m in meta if isinstance(m, Check)]
    value = _decode_plain(tp, data)
    for check in checks:
        value = _run(check, value)
    return value


def _decode_plain(tp: Any, data: object) -> Any:
    origin = get_origin(tp)
    if isinstance(tp, type) and is_dataclass(tp):
        if not isinstance(data, dict) or set(data) != {f.name for f in fields(tp)}:
            raise StaleEntry(f"{tp.__name__}: other fields")
        hints = _hints(tp)
        return tp(**{name: decode(hints[name], v) for name, v in data.items()})
    if origin is tuple:
        item, ellipsis = get_args(tp)
        if ellipsis is not Ellipsis or not isinstance(data, list):
            raise StaleEntry(f"not a list: {data!r}")
        return tuple(decode(item, v) for v in data)
    if origin is dict:
        key_type, value_type = get_args(tp)
        if not isinstance(data, dict):
            raise StaleEntry(f"not a mapping: {data!r}")
        return {decode(key_type, k): decode(value_type, v) for k, v in data.items()}
    if origin in (types.UnionType, typing.Union):
        options = [a for a in get_args(tp) if a is not type(None)]
        if data is None and len(options) < len(get_args(tp)):
            return None
        if len(options) != 1:
            raise StaleEntry(f"unsupported union {tp!r}")
        return decode(options[0], data)
    if origin is Literal:
        if data not in get_args(tp) or isinstance(data, bool):
            raise StaleEntry(f"{data!r} is not one of {get_args(tp)}")
        return data
    if isinstance(tp, type) and issubclass(tp, Enum):
        return tp(data)
    if tp is bool:
        if not isinstance(data, bool):
            raise StaleEntry(f"not a bool: {data!r}")
        return data
    if tp is int or tp is str:
        if not isinstance(data, tp) or isinstance(data, bool):
            raise StaleEntry(f"not {tp.__name__}: {data!r}")
        return data
    if tp is float:
        if not isinstance(data, (int, float)) or isinstance(data, bool):
            raise StaleEntry(f"not a number: {data!r}")
        return float(data)
    raise StaleEntry(f"unsupported type {tp!r}")


_LIMITS: dict[str, Callable[[Any, Any], bool]] = {
    "ge": lambda v, n: v >= n,
    "le": lambda v, n: v <= n,
    "min_length": lambda v, n: len(v) >= n,
    "max_length": lambda v, n: len(v) <= n,
    "strict": lambda v, n: True,  # the type was checked exactly already
}


def _run(check: Check, value: T) -> T:
    """A field's check on a decoded value: what pydantic runs on the file's value,
    and a no-op on a value it returned (the checks are idempotent)."""
    for name, bound in check.limits:
        if not _LIMITS[name](value, bound):
            raise StaleEntry(f"{value!r} breaks {name}={bound!r}")
    for fn in (check.before, check.after):
        if fn is not None and fn(value) != value:
            raise StaleEntry(f"{value!r} is not what its check returns")
    return value
