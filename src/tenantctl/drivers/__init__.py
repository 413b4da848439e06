"""Drivers: the one seam between tenantctl and a database server.

``base`` holds the Protocols (:class:`~tenantctl.drivers.base.Driver`,
:class:`~tenantctl.drivers.base.Session`); ``postgres`` is PostgreSQL
(``pg_session`` is the only module that imports asyncpg); ``fake`` is an
in-memory stand-in for the engine's simulation mode. A new driver goes here
and passes ``tests/test_driver_contract.py``.
"""
