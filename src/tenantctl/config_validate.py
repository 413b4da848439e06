"""tenants.yaml's data validated against config_schema's dataclasses, with pydantic.

Imported only when the config cache has no entry for the file's text
(config_cache.py): pydantic's import and the building of its validators are
paid by the first run after an edit, not by every run.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import TypeAdapter, ValidationError

from .config_fields import short_repr
from .config_schema import ConfigFile
from .errors import ConfigError
from .redact import redact
from .yaml_lines import LineIndex, where_in_file

_ADAPTER: TypeAdapter[ConfigFile] = TypeAdapter(ConfigFile)

# what pydantic reports for a key the schema does not have (extra="forbid")
_UNKNOWN_KEY = {"extra_forbidden", "unexpected_keyword_argument"}


def validate(path: Path, lines: LineIndex, data: object) -> ConfigFile:
    """The file's data as a ConfigFile; ConfigError naming ``file:line: field`` of
    every problem otherwise."""
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError as exc:
        raise ConfigError(redact(format_validation(path, lines, exc))) from None


def format_validation(path: Path, lines: LineIndex, exc: ValidationError) -> str:
    """pydantic's errors, one line each, as ``file:line: field.path: message``."""
    out = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] in _UNKNOWN_KEY:
            msg = "unknown key (check the spelling; see the README's tenants.yaml reference)"
        elif "input" in err and not isinstance(err["input"], (dict, list)):
            msg = f"{msg} (got {short_repr(err['input'], 80)})"
        out.append(f"{where_in_file(path, lines, loc)}: {msg}")
    return "\n".join(out)
