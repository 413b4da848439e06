"""Waves by name: which tenants ``--wave NAME`` selects, and ``--wave-pause``.

Pure: tenants.yaml declares the waves (``waves: [canary, early]``) and puts
tenants in them (``wave: canary``); a run goes wave after wave in declared
order, tenants without a wave last (:func:`tenantctl.engine.order_waves`).
"""

from __future__ import annotations

from .config import Project, TenantSpec, parse_duration
from .errors import BadInputError


def select_tenants(project: Project, ids: tuple[int, ...], all_: bool,
                   waves: tuple[str, ...] = ()) -> tuple[TenantSpec, ...]:
    """The tenants a command works on: the listed ``ids``, ``--all``, or (given
    ``--wave``) every tenant of those waves, in registry order."""
    if not waves:
        return project.select(ids, all_)
    if ids:
        raise BadInputError("give tenant ids or --wave, not both",
                            hint="--wave NAME selects every tenant of that wave")
    return select_waves(project, waves)


def select_waves(project: Project, names: tuple[str, ...]) -> tuple[TenantSpec, ...]:
    """Every tenant of the named waves; an unknown name, or a wave without a
    tenant, is bad input (exit 2) naming the waves tenants.yaml declares."""
    declared = project.file.waves
    known = ", ".join(declared) if declared else "none (tenants.yaml has no `waves:`)"
    unknown = [name for name in dict.fromkeys(names) if name not in declared]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown)
        raise BadInputError(f"--wave {listed}: no such wave in {project.path.name}",
                            hint=f"known waves: {known}")
    wanted = set(names)
    empty = [name for name in dict.fromkeys(names)
             if not any(t.wave == name for t in project.tenants)]
    if empty:
        raise BadInputError(f"--wave {', '.join(repr(n) for n in empty)}: no tenant is in "
                            "that wave", hint=f"put tenants in it with `wave: {empty[0]}`")
    return tuple(t for t in project.tenants if t.wave in wanted)


def parse_wave_pause(text: str | None) -> float:
    """Seconds to wait between waves (``30s``, ``5m``, ``1h``); 0 when not given."""
    if text is None:
        return 0.0
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise BadInputError(f"--wave-pause: {exc}",
                            hint="a duration such as 30s, 5m or 1h") from None
