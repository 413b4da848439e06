"""Hide passwords before text leaves tenantctl (messages, ledger, reports, argv).

Pure and cheap (``re`` only), so any module may import it.

What counts as a password:

* the password part of the user information of a URL,
  ``postgresql://user:SECRET@host/db`` (any scheme, multi-host included;
  percent-encoded or not);
* a ``password`` / ``sslpassword`` query parameter, ``…?password=SECRET&…``;
* a libpq key=value value, ``password=SECRET``, ``password = SECRET``,
  ``password='se cret'`` (quoted, with ``\\'`` escapes), and ``PGPASSWORD=…``.

Each is replaced by ``***``; everything else (user, hosts, ports, database,
other parameters) stays readable. Redacting twice gives the same text.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact", "redact_argv", "redact_dsn"]

MASK = "***"

# scheme://user:PASSWORD@  — the password runs to the last '@' of the authority
# (the part before the first '/', '?', '#' or whitespace), as in urllib. The
# look-behind makes the scheme start at a token boundary, keeping the scan
# linear on long runs of letters.
_URL_USERINFO = re.compile(
    r"(?<![A-Za-z0-9+.-])(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:]*:)"
    r"(?P<secret>[^\s/?#]*)(?=@)"
)
# ?password=SECRET / &sslpassword=SECRET in a URL query string
_QUERY = re.compile(r"(?i)(?P<head>[?&](?:ssl)?password=)(?P<secret>[^&#\s]*)")
# libpq key=value: password=SECRET, password = 'se cr\'et'
_KEYWORD = re.compile(
    r"(?i)(?<![\w?&.-])(?P<head>(?:pg|ssl)?password\s*=\s*)"
    r"(?P<secret>'(?:[^'\\]|\\[\s\S])*(?:'|\\?\Z)"  # quoted (an unterminated quote runs to the end)
    r"|(?!')(?:\\[\s\S]|[^\s\\])+\\?)"  # unquoted, backslash escapes included
)
_SCHEME = re.compile(r"\s*[A-Za-z][A-Za-z0-9+.-]*://")
_DSN_OPTION = re.compile(r"(--?[A-Za-z0-9_-]*dsn)(?:=(.*))?", re.IGNORECASE | re.DOTALL)


def _mask(match: re.Match[str]) -> str:
    return match.group("head") + MASK


def redact(text: str) -> str:
    """``text`` with every password of a PostgreSQL URL or libpq string replaced by ``***``."""
    if not text:
        return text
    lowered = text.lower()
    if "://" in text:
        text = _URL_USERINFO.sub(_mask, text)
    if "password" in lowered:
        text = _QUERY.sub(_mask, text)
        text = _KEYWORD.sub(_mask, text)
    return text


def redact_dsn(dsn: str) -> str:
    """A value known to be a connection string, redacted more eagerly than free text.

    For a URL, everything between ``user:`` and the last ``@`` is the password, even
    when it holds characters that should have been percent-encoded (``/``, ``#``,
    ``@``, ``?``): a mistyped DSN must not leak either.
    """
    scheme = _SCHEME.match(dsn)
    if scheme:
        start = scheme.end()
        at = dsn.rfind("@", start)
        colon = dsn.find(":", start, at) if at >= 0 else -1
        if colon >= 0:
            dsn = dsn[: colon + 1] + MASK + dsn[at:]
    return redact(dsn)


def redact_argv(argv: list[str]) -> list[str]:
    """A copy of ``argv`` safe to record: ``--dsn URL``, ``--dsn=URL`` (any option whose
    name ends in ``dsn``) and every argument holding a DSN have their password hidden."""
    out: list[str] = []
    value_is_dsn = False
    for arg in argv:
        if value_is_dsn:
            out.append(redact_dsn(arg))
            value_is_dsn = False
            continue
        option = _DSN_OPTION.fullmatch(arg)
        if option:
            if option.group(2) is None:
                out.append(arg)
                value_is_dsn = True
            else:
                out.append(f"{option.group(1)}={redact_dsn(option.group(2))}")
            continue
        out.append(redact(arg))
    return out
