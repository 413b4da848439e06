"""What volatile.py knows while it walks the migrations, and which expressions generate.

The simulated schema: tables (columns, defaults that call a generator,
triggers, whether they may hold rows), domains with generated defaults, user
functions that generate values, materialized views created WITH NO DATA over a
generator. An expression *generates* when it calls one of
``VOLATILE_GENERATORS`` or a user function known to generate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sqltree import PgNode, func_name, walk

VOLATILE_GENERATORS = frozenset({
    "gen_random_uuid", "uuidv4", "uuidv7",
    "uuid_generate_v1", "uuid_generate_v1mc", "uuid_generate_v4",
    "gen_random_bytes", "gen_salt",
    "random", "random_normal", "array_shuffle", "array_sample",
})

# pg_trigger.tgtype bits
TRIGGER_INSERT, TRIGGER_DELETE, TRIGGER_UPDATE = 1 << 2, 1 << 3, 1 << 4


@dataclass
class Table:
    """A table as the migrations so far made it."""

    columns: list[str] | None  # in order; None: not known (not created in this folder)
    defaults: dict[str, str] = field(default_factory=dict)  # column -> "gen()" its default calls
    rows: bool = False  # may hold rows (in the template)
    triggers: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (function, event bits)


@dataclass
class State:
    """Everything the migrations so far created that can make a write generate a value."""

    tables: dict[str, Table] = field(default_factory=dict)
    domains: dict[str, str] = field(default_factory=dict)  # domain -> "gen()"
    # user function -> why it generates: "calls gen()" / "inserts into ..."
    functions: dict[str, str] = field(default_factory=dict)
    matviews: dict[str, str] = field(default_factory=dict)  # matview (WITH NO DATA) -> "gen()"

    def table(self, name: str) -> Table:
        """The table ``name``; one not created in this folder (columns unknown, may hold rows)."""
        return self.tables.get(name) or Table(None, rows=True)


def generator_call(state: State, node: PgNode) -> tuple[str, int | None] | None:
    """The first generator call under ``node`` (directly or via a known user function):
    ("gen_random_uuid()", location) or ("mk_tok(), which calls random()", location)."""
    if node is None:
        return None
    best = None
    for call in walk(node):
        if type(call).__name__ != "FuncCall":
            continue
        name = func_name(call)
        if name in VOLATILE_GENERATORS:
            shown = f"{name}()"
        elif name in state.functions:
            shown = f"{name}(), which {state.functions[name]}"
        else:
            continue
        location = getattr(call, "location", None)
        key = location if location is not None and location >= 0 else 1 << 62
        if best is None or key < best[0]:
            best = (key, shown, location)
    return None if best is None else (best[1], best[2])


def generated_default(state: State, constraints: PgNode) -> str | None:
    for con in constraints or ():
        if getattr(con, "contype", None) is not None and con.contype.name == "CONSTR_DEFAULT":
            generated = generator_call(state, con.raw_expr)
            return generated[0] if generated else None
    return None


def domain_default(state: State, type_name: PgNode) -> str | None:
    names = getattr(type_name, "names", None) or ()
    return state.domains.get(last_name(names)) if names else None


def last_name(names: PgNode) -> str:
    if not names:
        return ""
    last = names[-1]
    return getattr(last, "sval", None) or getattr(last, "name", None) or ""
