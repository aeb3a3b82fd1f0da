"""A real PostgreSQL server for the worker tests, started from the Debian binaries in a tmp folder.

A mock cannot show what the search must survive on a server: concurrent table creation,
advisory locks, connections dropped by ``kill -9``. The server listens on a free loopback port
with its socket in the tmp folder, runs as ``nobody`` when the tests run as root (postgres refuses
root), and is stopped at the end. Without the binaries the tests that need it skip, saying how to
install them.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The throw-away server's base URL (no database), and a stop/start for the outage tests."""

    def __init__(self, url: str, pg_ctl: list[str], data: Path, options: str, log: Path):
        self.url, self._pg_ctl, self._data, self._options, self._log = url, pg_ctl, data, options, log

    def stop(self) -> None:
        subprocess.run(
            [*self._pg_ctl, "-D", str(self._data), "-m", "fast", "-w", "stop"], check=True, capture_output=True
        )

    def start(self) -> None:
        cmd = [*self._pg_ctl, "-D", str(self._data), "-o", self._options, "-l", str(self._log), "-w", "start"]
        subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="session")
def postgres_control(postgres_server_process) -> Server:
    return postgres_server_process


@pytest.fixture(scope="session")
def postgres_server(postgres_server_process) -> str:
    """The base URL (without database) of a throw-away server."""
    return postgres_server_process.url


@pytest.fixture(scope="session")
def postgres_server_process():
    """A throw-away server, stopped at the end of the session."""
    bindir = _bin_dir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; apt-get install postgresql")
    base = Path(tempfile.mkdtemp(prefix="dynlen-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "nobody")
        prefix = ["runuser", "-u", "nobody", "--"]
    data, sock, log = base / "data", base / "sock", base / "log"
    subprocess.run([*prefix, "mkdir", str(sock)], check=True)
    subprocess.run(
        [*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "--no-sync"],
        check=True,
        capture_output=True,
    )
    port = _free_port()
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100"
    subprocess.run(
        [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield Server(
            f"postgresql+psycopg://postgres@127.0.0.1:{port}", [*prefix, str(bindir / "pg_ctl")], data, options, log
        )
    finally:
        subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)


_numbers = itertools.count()


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A fresh, empty database on the test server: every test starts with no tables."""
    import sqlalchemy

    name = f"dynlen_test_{next(_numbers)}"
    engine = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{postgres_server}/{name}"
