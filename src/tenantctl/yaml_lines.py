"""tenants.yaml read with the line of every field, and messages that name them.

The text is parsed once into a node tree: the tree gives a line index (field
path -> line) and is then constructed into plain data. Every message about the
file names ``file:line: field.path``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeAlias

import yaml

from .errors import ConfigError
from .yaml_guard import LOADER, check_yaml_events

# A field path: mapping keys and list indexes, e.g. ("tenants", 3, "database").
Loc: TypeAlias = tuple[str | int, ...]
# field path -> the line (1-based) it is written on
LineIndex: TypeAlias = dict[Loc, int]

_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def parse_yaml(path: Path, text: str) -> tuple[LineIndex, object]:
    """(line index, data) of a YAML document; data is None for an empty one.

    Raises ConfigError naming the line for invalid YAML, duplicate keys (which
    PyYAML would silently resolve to the last one), non-scalar keys, and the
    limits of :mod:`tenantctl.yaml_guard`.
    """
    try:
        check_yaml_events(path, text)
        lines: LineIndex = {}
        loader = LOADER(text)
        try:
            node = loader.get_single_node()
            if node is None:
                return lines, None
            # index first: constructing flattens `<<: *base` merges into the
            # mapping in place, and an explicit key overriding a merged one
            # would then look like a duplicate
            _index_lines(path, node, (), lines)
            data: object = loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, max(0, exc.position)) + 1
        raise ConfigError(
            f"{path.name}:{line}: not valid YAML: character U+{exc.character:04X}: {exc.reason}"
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path.name}:{mark.line + 1}" if mark else path.name
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{where}: not valid YAML: {problem}") from None
    return lines, data


def _index_lines(path: Path, node: yaml.Node, prefix: Loc, out: LineIndex) -> None:
    out[prefix] = _line(node)
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(
                    f"{path.name}:{_line(key_node)}: a key must be a plain value, "
                    "not a list or a mapping"
                )
            key: str = key_node.value
            if key in seen:
                raise ConfigError(
                    f"{path.name}:{_line(key_node)}: key {key!r} appears twice"
                )
            seen.add(key)
            loc = (*prefix, key)
            _index_lines(path, value_node, loc, out)
            out[loc] = _line(key_node)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(path, item, (*prefix, i), out)


def field_path(loc: Loc) -> str:
    """``tenants[3].database``; a key that is not a plain word is shown quoted."""
    out = []
    for i, p in enumerate(loc):
        if isinstance(p, int):
            out.append(f"[{p}]")
        elif not _PLAIN_KEY.fullmatch(str(p)):
            out.append(f"[{str(p)!r}]")
        else:
            out.append(f".{p}" if i else str(p))
    return "".join(out)


def where_in_file(path: Path, lines: LineIndex, loc: Loc) -> str:
    """``file:line: field.path`` of ``loc`` (the line of its nearest written ancestor)."""
    loc = tuple(p for p in loc if p != "[key]")  # pydantic's marker for a bad mapping key
    field = field_path(loc)
    probe = tuple(loc)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    head = f"{path.name}:{line}" if line else path.name
    return f"{head}: {field}" if field else head
