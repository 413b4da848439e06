"""Limits on a YAML document, checked before PyYAML composes anything from it.

Hostile YAML must cost a linear scan of its text and nothing more: the limits
below are checked on PyYAML's event stream (libyaml when available), with no
recursion, no composed tree, and memory bounded by the anchors' sizes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .errors import ConfigError

# libyaml when PyYAML was built with it: a registry of 1,000 tenants parses in
# about 0.03 s instead of 0.35 s with the pure-Python loader (same nodes, marks).
LOADER: type[yaml.SafeLoader] | type[yaml.CSafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

# * nesting: a tenants.yaml is 4 levels deep (tenants / entry / sites / id);
#   100,000 levels crashed the process (SIGSEGV in the recursive composer).
MAX_YAML_DEPTH = 50
# * aliases: a registry needs few or none (an anchored tenant entry merged into
#   a few others with `<<: *base`, a shared `sites:` list). 100 uses is far above
#   that and still small enough to read every one of them.
MAX_YAML_ALIASES = 100
# * expansion: each alias use stands for its whole anchored node, and anchors
#   may nest ("billion laughs": 9 levels of 9 aliases expand to 387 million
#   nodes with only 72 alias uses; it ran for minutes and reached 12 GB). Every
#   later step (line index, validation) walks the expanded tree, so the nodes
#   aliases add are counted and bounded too.
MAX_YAML_ALIAS_NODES = 100_000

_NUMBER_LIKE = re.compile(r"[-+]?[0-9][0-9a-fA-FxXoObB_:.]*")


@dataclass
class _Frame:
    """An open mapping or sequence: the nodes it holds so far (itself included)."""

    count: int
    anchor: str | None


def _at(path: Path, event: yaml.Event) -> str:
    """``file:line`` of an event (just the file if PyYAML gave no position)."""
    mark = event.start_mark
    return f"{path.name}:{mark.line + 1}" if mark is not None else path.name


def check_yaml_events(path: Path, text: str) -> None:
    """Refuse a document nested too deep or expanding too much through aliases,
    or holding a number too long for Python to convert (ConfigError)."""
    depth = 0
    aliases = 0
    added = 0
    sizes: dict[str, int] = {}  # anchor -> nodes it stands for, expanded
    frames: list[_Frame] = []
    for event in yaml.parse(text, Loader=LOADER):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{_at(path, event)}: YAML nested more than "
                    f"{MAX_YAML_DEPTH} levels deep (a tenants.yaml needs about 4)"
                )
            frames.append(_Frame(1, event.anchor))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            frame = frames.pop()
            if frame.anchor is not None:
                sizes[frame.anchor] = frame.count
            if frames:
                frames[-1].count += frame.count
        elif isinstance(event, yaml.ScalarEvent):
            if event.implicit[0] and len(event.value) > 1000 and _NUMBER_LIKE.fullmatch(event.value):
                # PyYAML would turn it into an int; past 4,300 digits Python refuses
                raise ConfigError(
                    f"{_at(path, event)}: a number of "
                    f"{len(event.value):,} characters (quote it if it is meant as text)"
                )
            if event.anchor is not None:
                sizes[event.anchor] = 1
            if frames:
                frames[-1].count += 1
        elif isinstance(event, yaml.AliasEvent):
            where = _at(path, event)
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                raise ConfigError(
                    f"{where}: more than {MAX_YAML_ALIASES} YAML aliases (*name); "
                    "write the values out instead"
                )
            if any(frame.anchor == event.anchor for frame in frames):
                raise ConfigError(f"{where}: YAML alias *{event.anchor} refers to a node containing itself")
            size = sizes.get(event.anchor) if event.anchor is not None else None
            if size is None:
                continue  # undefined: the composer reports it with its line
            added += size
            if added > MAX_YAML_ALIAS_NODES:
                raise ConfigError(
                    f"{where}: YAML aliases expand to more than {MAX_YAML_ALIAS_NODES:,} "
                    "values (nested anchors, as in a \"billion laughs\" document)"
                )
            if frames:
                frames[-1].count += size
