"""tenantctl: provision and migrate PostgreSQL databases for a multi-tenant SaaS."""

__version__ = "0.1.0"
