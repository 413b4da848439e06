"""Files tenantctl writes for people to edit: `new` (a migration and its down
script) and `init` (a starter project).

Nothing is ever overwritten: every file a command would write is checked
first, and one that exists refuses the whole command (exit 2) before any file
is written.
"""

from __future__ import annotations

from pathlib import Path

from .errors import BadInputError

NEW_DOWN_TEMPLATE = """\
-- Undo {filename}: {description}
-- Runs on `tenantctl rollback --to <older version>`, newest migration first, in
-- one transaction with its `down` history row. Reverse every change of the up
-- script, in reverse order (DROP what it created, ADD back what it dropped), so
-- that `tenantctl check-reversible` finds the schema as it was before.

"""

INIT_CONFIG = """\
# tenantctl project: see the README (tenants.yaml) for every key.
migrations: migrations            # versioned migrations, v<version>_<what>.sql + .down.sql
seed: seed/tenant_seed.sql        # run once per tenant at provisioning
database_pattern: "cvs_client_{clnt_id}"
control_database: tenantctl       # run ledger and registry, on the default server
template_database: tenantctl_template
default_mode: database            # one database per tenant (or: shared)
# servers:                        # none: the embedded PostgreSQL, or --dsn / TENANTCTL_DSN
#   main: { dsn: "${TENANTCTL_MAIN_DSN}", max_connections: 40 }
waves: [canary]                   # rollout order: canary first, then everyone else
settings: { concurrency: 8, lock_timeout: 5s, statement_timeout: 0, lock_wait: 120s, retries: 3 }
tenants:
  - { clnt_id: 1, name: "First client", sites: [1, 2], wave: canary }
  - { clnt_id: 2, name: "Second client", sites: [1] }
"""

INIT_MIGRATION = """\
-- v1.0.0: site master, the first table of every tenant schema.
-- Runs in one transaction with its history row. XOS conventions: every tenant
-- table carries clnt_id (int2) and leads its keys with (clnt_id, site_id, ...).

CREATE TABLE cvs_site_mast (
    clnt_id    int2        NOT NULL,
    site_id    int2        NOT NULL,
    site_cd    text        NOT NULL,
    site_nm    text        NOT NULL,
    rcrd_stat  int2        NOT NULL DEFAULT 1,
    mod_dttm   timestamptz NOT NULL DEFAULT now(),
    mod_by     text,
    CONSTRAINT cvs_site_mast_pk PRIMARY KEY (clnt_id, site_id),
    CONSTRAINT cvs_site_mast_site_cd_uk UNIQUE (clnt_id, site_cd),
    CONSTRAINT cvs_site_mast_rcrd_stat_ck CHECK (rcrd_stat IN (0, 1))
);

COMMENT ON TABLE cvs_site_mast IS 'Sites of a client (tenant).';
"""

INIT_DOWN = """\
-- Undo v1.0.0: drop cvs_site_mast (its constraints go with it).

DROP TABLE cvs_site_mast;
"""

INIT_SEED = """\
-- Tenant seed: run once per tenant at provisioning, after all migrations, in
-- the same transaction as its history row. The tenant's values arrive only as
-- settings, read with current_setting():
--   tenantctl.clnt_id      the client id (int2)
--   tenantctl.tenant_name  the tenant's display name (a value, never SQL)
--   tenantctl.sites        comma-separated site ids, e.g. '1,2'

INSERT INTO cvs_site_mast (clnt_id, site_id, site_cd, site_nm, mod_by)
SELECT current_setting('tenantctl.clnt_id')::int2,
       s.site_id,
       'S' || s.site_id,
       current_setting('tenantctl.tenant_name') || ' - site ' || s.site_id,
       'tenantctl'
FROM unnest(string_to_array(current_setting('tenantctl.sites'), ',')::int2[]) AS s (site_id)
ON CONFLICT (clnt_id, site_id) DO NOTHING;
"""

INIT_FILES = {
    Path("tenants.yaml"): INIT_CONFIG,
    Path("migrations") / "v1.0.0_create_site_mast.sql": INIT_MIGRATION,
    Path("migrations") / "v1.0.0_create_site_mast.down.sql": INIT_DOWN,
    Path("seed") / "tenant_seed.sql": INIT_SEED,
}


def write_new(files: dict[Path, str]) -> list[Path]:
    """Write ``files`` (parents created), none of which may exist yet: an existing
    one refuses them all (exit 2) before anything is written."""
    existing = [path for path in files if path.exists() or path.is_symlink()]
    if existing:
        raise BadInputError(
            "refusing to overwrite: " + ", ".join(str(p) for p in existing),
            hint="move them away, or pick another folder; nothing was written")
    written = []
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("x", encoding="utf-8") as out:  # "x": never clobber a file made meanwhile
            out.write(text)
        written.append(path)
    return written


def init_project(folder: Path) -> list[Path]:
    """A starter project in ``folder``: tenants.yaml, a first migration with its
    down script, and a seed."""
    if folder.exists() and not folder.is_dir():
        raise BadInputError(f"{folder} exists and is not a folder")
    return write_new({folder / rel: text for rel, text in INIT_FILES.items()})


def down_companion(up: Path) -> Path:
    """``v1.2.0_x.sql`` -> ``v1.2.0_x.down.sql``."""
    return up.with_name(up.name.removesuffix(".sql") + ".down.sql")
