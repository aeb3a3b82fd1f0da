"""Storage messages: outages given up in one line after a bounded wait, passwords never printed."""

from __future__ import annotations

import pytest

from dynlen.errors import UserError
from dynlen.search import storage


def test_an_outage_longer_than_the_patience_is_one_line_without_the_password(capsys):
    patience = storage.Patience("postgresql://user:s3cret@db.example:5432/studies", seconds=0.3)
    with pytest.raises(UserError) as info:
        for _ in range(20):
            patience.wait("connection refused")
    message = str(info.value)
    assert "did not answer for 0 s (connection refused)" in message and "the study is intact" in message
    assert "\n" not in message and "s3cret" not in message and "***" in message
    notice = capsys.readouterr().err
    assert "is not answering" in notice and "s3cret" not in notice
    with pytest.raises(UserError):  # once given up, every later call gives up at once
        patience.wait("connection refused")


def test_a_recovered_storage_resets_the_wait(capsys):
    patience = storage.Patience("postgresql://u@h/db", seconds=5)
    patience.wait("connection refused")
    patience.recovered()
    assert patience.since is None and patience.delay == 0.5
    assert "answers again" in capsys.readouterr().err


@pytest.mark.parametrize(
    "url",
    [
        "postgres://u:pw@host:notaport/db",
        "postgresql://u:pw@host:5432/db",
        "nosuchkind://u:pw@host/db",
        "postgresql+psycopg://u:pw@host:99999999999/db",
    ],
)
def test_passwords_are_masked_in_every_storage_message(url):
    assert "pw" not in storage.mask_url(url).replace("postgres", "")
    with pytest.raises(UserError) as info:
        storage.parse_storage_url(url)
        storage.check_reachable(url)
    assert ":pw@" not in str(info.value)


def test_an_outage_is_told_from_other_errors():
    import sqlalchemy

    lost = sqlalchemy.exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly"))
    assert storage.outage_cause(lost) == "server closed the connection unexpectedly"
    assert storage.outage_cause(ValueError("Cannot tell a FAIL trial.")) is None


def test_every_storage_call_of_the_cache_layer_is_retried():
    """Optuna's cache calls some private storage methods directly: each must wait out an outage too."""
    import inspect
    import re

    import optuna

    source = inspect.getsource(optuna.storages._cached_storage)
    called = set(re.findall(r"_backend\.(\w+)", source)) - storage._NOT_RETRIED
    unwrapped = [
        name for name in called if getattr(storage.PatientStorage, name) is getattr(optuna.storages.RDBStorage, name)
    ]
    assert unwrapped == []
