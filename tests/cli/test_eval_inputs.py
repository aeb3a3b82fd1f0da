"""dynlen eval refuses a bad configuration or an unusable --out in one line, before data or model load."""

from __future__ import annotations

import contextlib
import subprocess

import pytest

from dynlen.cli import eval as eval_cli
from dynlen.cli.main import main


@pytest.fixture
def nothing_loads(monkeypatch):
    def refuse(*_a, **_k):
        raise AssertionError("loaded before the input was checked")

    monkeypatch.setattr(eval_cli, "load_squad", refuse)
    monkeypatch.setattr(eval_cli, "QARunner", refuse)


def _eval(tmp_path, capsys, *args) -> str:
    argv = ["eval", "--model", "unused", "--data", "unused.json", "--no-latency", "--quiet", *args]
    if "--out" not in args:
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists(), "a refused command leaves no output folder behind"
    return err


@pytest.mark.parametrize(
    "config, says",
    [
        ("inf,1,1,1", "inf is not a finite number"),
        ("1e400,200,100,50", "inf is not a finite number"),
        ("ratios:1,0.5,0.9,0.1", "more than layer 2"),
        ("ratios:1,abc", "cannot read configuration"),
    ],
)
def test_inline_configuration(tmp_path, capsys, nothing_loads, config, says):
    assert says in _eval(tmp_path, capsys, "--config", config)


@pytest.mark.parametrize(
    "blob, says",
    [
        (b'{"kind": "ratios", "values": [1, 1], "significance": [1]}', "'significance' is [1], not a str"),
        (b'{"kind": "ratios", "values": [1, 1], "keep_question": "yes"}', "'keep_question' is 'yes', not a bool"),
        (b'\xff\xfe{"kind": "ratios", "values": [1, 1]}', "not valid UTF-8 JSON"),
        (b'{"kind": "ratios", "values": [1, ', "not valid UTF-8 JSON"),
    ],
)
def test_configuration_file(tmp_path, capsys, nothing_loads, blob, says):
    path = tmp_path / "config.json"
    path.write_bytes(blob)
    assert says in _eval(tmp_path, capsys, "--config", str(path))


@contextlib.contextmanager
def _tmpfs(folder, *options):
    """A tiny filesystem of its own at ``folder`` (needs root; skipped elsewhere)."""
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", ",".join(options), "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize("options, says", [(("size=64k",), "No space left"), (("size=1m", "ro"), "Read-only")])
def test_unusable_out_is_found_before_the_evaluation(tmp_path, capsys, nothing_loads, options, says):
    with _tmpfs(tmp_path / "disk", *options) as disk:
        err = _eval(tmp_path, capsys, "--out", str(disk / "eval"))
        assert f"cannot write to {disk / 'eval'}" in err or f"cannot write to {disk}" in err
        assert says in err
        assert not list(disk.iterdir())


def test_answer_checks_its_configuration_before_the_model(tmp_path, capsys):
    argv = ["answer", "--model", str(tmp_path / "absent"), "--question", "q?", "--context", "c.", "--config", "inf,1"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: layer 1: inf is not a finite number; give a ratio in (0, 1] or a count"
