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
import functools
import hashlib
import inspect
import os
import sys
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
# How long a worker waits out a server that stopped answering (a restart, a network cut) before it
# exits in one line; the study itself is never left half-written by an outage.
STORAGE_PATIENCE_S = 300.0
# How long a worker waits for the study lock before it names the connection holding it, and gives up.
LOCK_NOTICE_S = 15.0
LOCK_TIMEOUT_S = 600.0


def mask_url(text: str) -> str:
    """A storage URL fit for a message: the password replaced, even where the URL does not parse."""
    try:
        return make_url(text).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is masked by its shape below
        scheme, sep, rest = text.partition("://")
        if not sep:
            return text
        credentials, at, host = rest.rpartition("@")
        if not at or ":" not in credentials:
            return text
        return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def parse_storage_url(text: str) -> URL:
    """The SQLAlchemy URL of ``text``, or a one-line error saying what a storage URL looks like."""
    example = "e.g. postgresql://user:password@host:5432/dbname or sqlite:///path/study.db"
    try:
        url = make_url(text)
    except (sqlalchemy.exc.ArgumentError, ValueError) as exc:  # ValueError: a port that is not a number
        raise UserError(f"--storage {mask_url(text)!r} is not a database URL ({exc}); {example}") from None
    try:
        dialect = url.get_dialect()
    except sqlalchemy.exc.NoSuchModuleError:
        raise UserError(f"--storage {mask_url(text)!r}: unknown database kind {url.drivername!r}; {example}") from None
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
        safe = mask_url(url)
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
            check_sqlite_folder(Path(database))
        return
    check_reachable(url)


# --- outages ----------------------------------------------------------------------------
class StorageOutage(Exception):
    """The server stopped answering while this worker held the study lock: the lock is gone with the
    connection, so what was being done under it must start over, not carry on unlocked."""


def outage_cause(exc: BaseException) -> str | None:
    """The first line of a lost-connection error anywhere in ``exc``'s chain, or None for other errors."""
    seen: BaseException | None = exc
    while seen is not None:
        lost = isinstance(seen, (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError)) or (
            isinstance(seen, sqlalchemy.exc.DBAPIError) and seen.connection_invalidated
        )
        if lost:
            lines = str(getattr(seen, "orig", seen)).strip().splitlines()
            return lines[0] if lines else type(seen).__name__
        seen = seen.__cause__ or seen.__context__
    return None


class Patience:
    """Waits out a storage outage with growing pauses, for a bounded time, then gives up in one line."""

    def __init__(self, url: str, seconds: float | None = None):
        self.url = url
        self.seconds = STORAGE_PATIENCE_S if seconds is None else seconds
        self.since: float | None = None
        self.delay = 0.5
        self.gave_up = False

    def wait(self, cause: str) -> None:
        """Sleep before the next try, or raise the one-line error once the outage outlasts the patience."""
        now = time.monotonic()
        if self.since is None:
            self.since = now
            print(
                f"the study storage {mask_url(self.url)} is not answering ({cause}); "
                f"retrying for up to {self.seconds:.0f} s",
                file=sys.stderr,
                flush=True,
            )
        if self.gave_up or now - self.since > self.seconds:
            self.gave_up = True
            raise UserError(
                f"the study storage {mask_url(self.url)} did not answer for {self.seconds:.0f} s ({cause}); "
                "the study is intact: start the workers again once the server is back"
            )
        time.sleep(self.delay)
        self.delay = min(2 * self.delay, 8.0)

    def recovered(self) -> None:
        if self.since is not None:
            print(
                f"the study storage answers again after {time.monotonic() - self.since:.0f} s; carrying on",
                file=sys.stderr,
                flush=True,
            )
        self.since, self.delay = None, 0.5


def _patient(method):
    """``method`` retried through outages while the storage is patient; a StorageOutage while it is not."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        while True:
            try:
                result = method(self, *args, **kwargs)
            except Exception as exc:
                cause = outage_cause(exc)
                if cause is None:
                    raise
                if not self.patient:
                    raise StorageOutage(cause) from None
                self.patience.wait(cause)
                continue
            self.patience.recovered()
            return result

    return call


class PatientStorage(optuna.storages.RDBStorage):
    """Optuna's RDB storage that outlives a server restart: every call waits out a lost connection.

    Outside the study lock (a trial's writes, reading trials) calls retry until the server is back
    or :class:`Patience` runs out. Under the lock (``patient`` False) a lost connection raises
    :class:`StorageOutage` at once, since the lock went with it. A missed heartbeat is skipped:
    the next beat tries again, and a trial silent for longer is what the grace period is for.
    """

    patient = True

    def __init__(self, url: str, patience: Patience, **kwargs):
        self.patience = patience
        super().__init__(url, **kwargs)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            super().record_heartbeat(trial_id)
        except Exception as exc:
            if outage_cause(exc) is None:
                raise


_NOT_RETRIED = {"upgrade", "get_current_version", "get_head_version", "get_all_versions", "remove_session"}
_NOT_RETRIED |= {"record_heartbeat", "get_heartbeat_interval", "get_heartbeat_stale_trial_callback"}
# The private methods Optuna's cache layer calls on the storage directly; each opens its own session,
# so a retry starts from a fresh connection (methods handed a session are never retried on their own).
_CALLED_BY_THE_CACHE = {"_create_new_trial", "_get_best_trial_id", "_get_stale_trial_ids", "_get_trials"}
_CALLED_BY_THE_CACHE |= {"_set_trial_param"}
for _name, _method in vars(optuna.storages.RDBStorage).items():
    public = not _name.startswith("_") and _name not in _NOT_RETRIED
    if inspect.isfunction(_method) and (public or _name in _CALLED_BY_THE_CACHE):
        setattr(PatientStorage, _name, _patient(_method))


def check_sqlite_folder(database: Path) -> None:
    """One line when the SQLite file's folder cannot be made or written (a read-only disk, /proc); a folder
    made to find out is removed again, so a refused run leaves nothing behind."""
    parent = database.parent
    _check_creatable(parent)
    missing = [folder for folder in [parent, *parent.parents] if not folder.exists()]
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(
            f"--storage sqlite:///{database}: cannot create {parent} ({exc.strerror}); give a writable path"
        ) from None
    finally:
        for folder in missing:  # innermost first
            with contextlib.suppress(OSError):
                folder.rmdir()
    if (parent.is_dir() and not os.access(parent, os.W_OK)) or (database.exists() and not os.access(database, os.W_OK)):
        raise UserError(f"--storage sqlite:///{database}: {parent} is not writable; give a writable path")
    if parent.is_dir():  # permissions can say yes where the file system says no (/proc, a read-only mount)
        _check_writes(parent / (database.name + ".lock"))


def _check_writes(path: Path) -> None:
    """One line when ``path`` cannot be opened for writing; a file made to find out is removed again."""
    existed = path.exists()
    try:
        with path.open("a"):
            pass
    except OSError as exc:
        raise UserError(
            f"cannot write {path} ({exc.strerror}); give a run folder or storage path that is writable"
        ) from None
    if not existed:
        path.unlink(missing_ok=True)


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
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(
                f"cannot write {self.path} ({exc.strerror}); give a run folder or storage path that is writable"
            ) from None
        while True:
            try:
                fh = self.path.open("a+")
            except OSError as exc:
                raise UserError(
                    f"cannot write {self.path} ({exc.strerror}); give a run folder or storage path that is writable"
                ) from None
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
        self.name = name
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
        """Take the lock; a lost server is a StorageOutage, a lock held too long one line naming its holder."""
        if not is_postgres(self.url):
            return
        if self._depth == 0:
            try:
                self._conn = self._engine.connect()
                self._wait_for_lock()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                self.drop()
                cause = outage_cause(exc)
                if cause is None:
                    raise
                raise StorageOutage(cause) from None
        self._depth += 1

    def _wait_for_lock(self) -> None:
        started, told = time.monotonic(), False
        while not self._conn.execute(sqlalchemy.text("SELECT pg_try_advisory_lock(:k)"), {"k": self.key}).scalar():
            self._conn.commit()
            waited = time.monotonic() - started
            if waited > LOCK_TIMEOUT_S:
                holder = self.holder()
                self.drop()
                raise UserError(
                    f"the study lock of {self.name!r} on {mask_url(self.url)} has been held for {waited:.0f} s by "
                    f"database connection {holder} (another worker, or a hung connection); if no worker is "
                    f"starting a trial, end that connection: SELECT pg_terminate_backend({holder})"
                )
            if waited > LOCK_NOTICE_S and not told:
                told = True
                print(
                    f"waiting for the study lock of {self.name!r}, held by database connection {self.holder()} "
                    f"(giving up after {LOCK_TIMEOUT_S:.0f} s)",
                    file=sys.stderr,
                    flush=True,
                )
            time.sleep(0.2)
        self._conn.commit()

    def holder(self) -> str:
        """The server process id of the connection holding the lock, as pg_locks shows it."""
        unsigned = self.key & 0xFFFFFFFFFFFFFFFF
        rows = self._conn.execute(
            sqlalchemy.text(
                "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted "
                "AND classid = :hi AND objid = :lo AND objsubid = 1"
            ),
            {"hi": unsigned >> 32, "lo": unsigned & 0xFFFFFFFF},
        ).all()
        self._conn.commit()
        return ", ".join(str(r[0]) for r in rows) or "unknown"

    def release(self) -> None:
        if not is_postgres(self.url) or self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._conn is not None:
            try:
                self._conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                self._conn.commit()
            except sqlalchemy.exc.SQLAlchemyError as exc:
                if outage_cause(exc) is None:
                    raise
                # the connection is gone, and the server drops a session's advisory locks with it
            self.drop()

    def drop(self) -> None:
        """Forget the connection (and with it the lock) without talking to the server."""
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        self._conn = None
        self._depth = 0

    def close(self) -> None:
        while self._depth:
            self.release()
        self._engine.dispose()


# --- the storage itself ------------------------------------------------------------------
def make_storage(
    url: str, heartbeat_interval: int | None, grace_period: int | None, patience: Patience | None = None
) -> optuna.storages.RDBStorage:
    """An Optuna RDB storage; a concurrent first start that races on table creation tries again.

    With ``patience`` (server storages) it is a :class:`PatientStorage`, which outlives outages.

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
                if patience is None:
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kwargs)
                return PatientStorage(url, patience, engine_kwargs=engine_kwargs(url), **kwargs)
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.OperationalError) as exc:
            cause = outage_cause(exc)
            if patience is not None and cause is not None and "already exists" not in cause:
                raise StorageOutage(cause) from None
            text = str(exc).lower()
            if "already exists" not in text and "unique" not in text and "duplicate" not in text:
                raise UserError(f"the study storage refused to open: {str(exc).splitlines()[0]}") from None
            last = exc
            time.sleep(0.2 * (attempt + 1))
    raise UserError(f"the study storage kept failing to create its tables: {str(last).splitlines()[0]}")
