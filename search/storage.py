"""Where a study lives, and how many processes may share it.

Two kinds of storage, two ways of knowing who else is working:

* the default SQLite file in the run folder serves **one process**. That process holds an
  exclusive ``flock`` on ``study.db.lock`` in the run folder for its whole life, so a second process is
  refused at once (SQLite cannot carry several writers without "database is locked" and table
  races), and a process that gets the lock knows every RUNNING trial in its study was left by a
  killed run: it fails them and enqueues their parameters again, right away.
* a server (PostgreSQL) serves **many workers** on one or many machines. Nobody can know from
  a lock file whether a worker elsewhere is alive, so trials send Optuna heartbeats; a trial whose
  heartbeat stops is failed by the next worker that looks, and retried. Whatever must happen
  exactly once (creating tables, enqueueing the baselines, handing out sampler seeds, starting
  the trial that reaches ``--trials``) runs under a PostgreSQL advisory lock.

Every storage problem a user can fix (bad URL, missing driver, unreachable server, wrong
password) becomes one :class:`~dynlen.errors.UserError` line before any data or model loads.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from sqlalchemy.engine import URL, make_url

from dynlen.errors import UserError

POSTGRES_HINT = "pip install -e '.[postgres]' (psycopg 3)"
DRIVER_HINTS = {
    "postgresql": POSTGRES_HINT,
    "mysql": "pip install pymysql and write mysql+pymysql://",
}
CONNECT_TIMEOUT_S = 10


def parse_storage_url(text: str) -> URL:
    """The SQLAlchemy URL of ``text``, or a one-line error saying what a storage URL looks like."""
    example = "e.g. postgresql://user:password@host:5432/dbname or sqlite:///path/study.db"
    try:
        url = make_url(text)
    except sqlalchemy.exc.ArgumentError:
        raise UserError(f"--storage {text!r} is not a database URL; {example}") from None
    try:
        dialect = url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(f"--storage {text!r}: unknown database kind {url.drivername!r}; {example}") from None
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        hint = DRIVER_HINTS.get(url.get_backend_name(), f"install the Python driver for {url.drivername}")
        raise UserError(f"--storage {url.drivername}://…: its driver is not installed ({exc}); {hint}") from None
    return url


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def is_postgres(url: str) -> bool:
    return make_url(url).get_backend_name() == "postgresql"


def engine_kwargs(url: str) -> dict:
    """A bounded connect timeout, so an unreachable server is an error in seconds, not minutes."""
    if is_postgres(url):
        return {"connect_args": {"connect_timeout": CONNECT_TIMEOUT_S}, "pool_pre_ping": True}
    return {}


def check_reachable(url: str) -> None:
    """Open and close one connection; any failure is one line naming the server and the cause."""
    engine = sqlalchemy.create_engine(url, **engine_kwargs(url))
    try:
        with engine.connect() as conn:
            conn.execute(sqlalchemy.text("SELECT 1"))
    except sqlalchemy.exc.SQLAlchemyError as exc:
        cause = str(getattr(exc, "orig", exc)).strip().splitlines()
        safe = make_url(url).render_as_string(hide_password=True)
        raise UserError(
            f"cannot reach the study storage {safe}: {cause[0] if cause else type(exc).__name__}; "
            "check host, port, database name and credentials (the database must exist: createdb NAME)"
        ) from None
    finally:
        engine.dispose()


def validate_storage(url: str) -> None:
    """Everything that can be wrong with a storage URL, checked before data or a model loads; writes nothing."""
    parse_storage_url(url)
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:":
            _check_creatable(Path(database).parent)
        return
    check_reachable(url)


def _check_creatable(folder: Path) -> None:
    """Refuse a folder that cannot be made or written to, without making it."""
    existing = folder.resolve()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot make the run folder {folder}: {existing} is a file, not a folder; choose another run")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the run folder {folder}: {existing} is not writable; choose another run")


# --- locks -------------------------------------------------------------------------------
class RunLock:
    """An exclusive ``flock`` on ``<folder>/<name>`` (``study.db.lock`` in the run folder), held until the process ends.

    The kernel drops the lock when the process dies, ``kill -9`` included, so holding it proves
    that no other process on this machine works on the run folder.
    """

    def __init__(self, folder: Path, name: str = "study.db.lock"):
        self.path = Path(folder) / name
        self._fh = None

    def acquire(self) -> bool:
        """Take the lock (making the folder); False when another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fh = self.path.open("a+")
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                return False
            if self._still_the_file(fh):
                break
            fh.close()  # its holder removed the file while we waited for it: lock the new one
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        self._fh = fh
        return True

    def _still_the_file(self, fh) -> bool:
        try:
            return os.stat(self.path).st_ino == os.fstat(fh.fileno()).st_ino
        except FileNotFoundError:
            return False

    def held_elsewhere(self) -> bool:
        """Whether another process holds the lock now; looks without creating anything."""
        try:
            fh = self.path.open("r")
        except FileNotFoundError:
            return False
        with fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return False

    def release(self) -> None:
        """Drop the lock and its file: a run folder keeps no lock file once its process is done."""
        if self._fh is not None:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            fcntl.flock(self._fh.fileno(), fcntl.LOCK_UN)
            self._fh.close()
            self._fh = None


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[bool]:
    """A non-blocking exclusive ``flock`` on ``path``: yields whether this process got it; the file goes with it."""
    lock = RunLock(path.parent, path.name)
    if not lock.acquire():
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


class StudyLock:
    """A lock shared by every worker of one study: a PostgreSQL advisory lock on a held connection.

    Other storages have no shared lock; SQLite runs are single-process (``RunLock``), so there a
    no-op is exact.
    """

    def __init__(self, url: str, name: str):
        self.url = url
        self.key = int.from_bytes(hashlib.sha1(f"dynlen:{name}".encode()).digest()[:8], "big", signed=True)
        self._engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool, **engine_kwargs(url))
        self._conn = None
        self._depth = 0

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        self.acquire()
        try:
            yield
        finally:
            self.release()

    def acquire(self) -> None:
        if not is_postgres(self.url):
            return
        if self._depth == 0:
            self._conn = self._engine.connect()
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            self._conn.commit()
        self._depth += 1

    def release(self) -> None:
        if not is_postgres(self.url) or self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._conn is not None:
            self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
            self._conn.commit()
            self._conn.close()
            self._conn = None

    def close(self) -> None:
        while self._depth:
            self.release()
        self._engine.dispose()


# --- the storage itself ------------------------------------------------------------------
def make_storage(url: str, heartbeat_interval: int | None, grace_period: int | None) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage; a concurrent first start that races on table creation tries again.

    Callers on PostgreSQL hold the study lock, which already serialises table creation; the
    retry covers storages without one.
    """
    kwargs = {}
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=3)
        kwargs = dict(
            heartbeat_interval=heartbeat_interval,
            grace_period=grace_period or 3 * heartbeat_interval,
            heartbeat_stale_trial_callback=retry,
        )
    last: Exception | None = None
    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            text = str(exc).lower()
            if "already exists" not in text and "unique" not in text and "duplicate" not in text:
                raise UserError(f"the study storage refused to open: {str(exc).splitlines()[0]}") from None
            last = exc
            time.sleep(0.2 * (attempt + 1))
    raise UserError(f"the study storage kept failing to create its tables: {str(last).splitlines()[0]}")
