"""The lint rules: id, severity, summary and hint of each; a finding's shape.

docs/lint-rules.md describes each rule (what it catches, why it matters, the
fix; a test keeps it complete); ``RULES`` is the table the linters (lint.py,
lint_stateless.py) report from and tenants.yaml's ``lint:`` block names rules of.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Rule:
    id: str
    severity: str  # "error" | "warning"
    summary: str
    hint: str


@dataclass(frozen=True)
class Finding:
    rule: str
    severity: str
    file: str
    line: int
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        """The finding as a JSON object (its fields by name)."""
        return asdict(self)


def _rule(id: str, summary: str, hint: str, severity: str = "error") -> Rule:
    return Rule(id, severity, summary, f"{hint}; or accept it in that file: `-- tenantctl: allow {id}`")


RULES: dict[str, Rule] = {r.id: r for r in (
    _rule("require-concurrent-index", "index built on an existing table without CONCURRENTLY",
          "use CREATE INDEX CONCURRENTLY in a migration headed by `-- tenantctl: no-transaction` "
          "(for a key: build the unique index concurrently, then ADD CONSTRAINT ... USING INDEX)"),
    _rule("concurrent-in-transaction", "CONCURRENTLY cannot run inside a transaction block",
          "move it to its own migration headed by `-- tenantctl: no-transaction`"),
    _rule("add-column-not-null-no-default", "NOT NULL column added to an existing table without DEFAULT",
          "add it with a DEFAULT; or add it nullable, backfill, add CHECK (col IS NOT NULL) "
          "NOT VALID, VALIDATE it, then SET NOT NULL (no table scan)"),
    _rule("ban-drop-column", "column of an existing table dropped",
          "running application code may still read it: stop using it in a release, drop it later"),
    _rule("ban-drop-table", "existing table dropped",
          "running application code may still use it: stop using it in a release, drop it later"),
    _rule("ban-truncate", "existing table truncated", "tenant data is lost; delete rows explicitly"),
    _rule("ban-alter-column-type", "column type changed on an existing table (rewrite, exclusive lock)",
          "add a new column, backfill in batches, switch readers, then drop the old one"),
    _rule("alter-column-type-timestamptz", "timestamp <-> timestamptz type change on an existing table",
          "it rewrites nothing only when the session TimeZone is UTC (PostgreSQL 12+): put "
          "`SET TimeZone = 'UTC';` before it in the file (the session is reset after the file); "
          "under any other zone PostgreSQL rewrites the table under an exclusive lock and reads "
          "the values as that zone's local time",
          severity="warning"),
    _rule("ban-rename", "existing table or column renamed",
          "running application code uses the old name: add the new one alongside, migrate readers"),
    _rule("constraint-not-valid", "constraint validated while holding a lock on an existing table",
          "add it NOT VALID, then VALIDATE CONSTRAINT in a later migration"),
    _rule("tenant-table-needs-clnt-id", "tenant table without the tenant column "
          "(tenants.yaml `tenant_column`, default clnt_id)",
          "add the tenant column as `int2 NOT NULL` (e.g. `clnt_id int2 NOT NULL`), or list the "
          "table under shared.global_tables in tenants.yaml"),
    _rule("key-leads-with-clnt-id", "PRIMARY KEY/UNIQUE/FOREIGN KEY does not start with the tenant column",
          "put the tenant column first, e.g. (clnt_id, site_id, ...); RI checks and unique indexes "
          "ignore RLS"),
    _rule("key-site-id-second", "key of a table with site_id does not have site_id second",
          "XOS keys lead with (tenant column, site_id, ...), e.g. (clnt_id, site_id, ...)",
          severity="warning"),
    _rule("rls-disabled", "row level security disabled or unforced on a tenant table",
          "tenant isolation relies on ENABLE + FORCE ROW LEVEL SECURITY; keep both"),
    _rule("empty-migration", "migration file without any statement",
          "an empty or comment-only file is recorded as applied and runs nothing; add its SQL, "
          "or delete the file if it is not meant to ship", severity="warning"),
    _rule("ban-drop-database", "statement on a database as a whole (other tenants' databases included)",
          "a migration runs inside one tenant's database and must change only that; databases are "
          "created, dropped and configured by tenantctl (provision, tenants.yaml)"),
    _rule("ban-cross-database-access", "access to another database or server (dblink, foreign data "
          "wrappers, subscriptions)",
          "a tenant's migration must not read or write other databases; move cross-database data "
          "work to a reviewed one-off job"),
    _rule("ban-copy-program", "COPY ... PROGRAM or server file access",
          "it runs a shell command or reads/writes a file on the database server; load data with "
          "INSERT in the migration, or from the application"),
    _rule("ban-alter-system", "ALTER SYSTEM changes the whole server's configuration",
          "server settings belong to the server's configuration management, not to a tenant's migration"),
    _rule("ban-role-ddl", "role DDL or role switch (roles are shared by every database of the server)",
          "create and grant roles outside the migrations (shared mode: tenantctl manages its roles); "
          "GRANT privileges on this database's objects is fine"),
    _rule("view-needs-security-invoker", "shared mode: view without security_invoker = true",
          "a view runs with its owner's rights and bypasses the tenant RLS policies of the tables "
          "it reads: create it WITH (security_invoker = true)"),
    _rule("shared-materialized-view", "shared mode: materialized view",
          "it stores every tenant's rows and has no row level security; use a view WITH "
          "(security_invoker = true), or a table with the tenant column (tenantctl adds its policy)"),
    _rule("shared-security-definer", "shared mode: SECURITY DEFINER function or procedure",
          "it runs with its owner's rights, which bypass RLS when the owner owns the tables; use "
          "SECURITY INVOKER (the default)"),
)}

# Rules that do not depend on the simulated schema: checked in down scripts too.
OUTSIDE_RULES = ("ban-drop-database", "ban-cross-database-access", "ban-copy-program",
                 "ban-alter-system", "ban-role-ddl")
