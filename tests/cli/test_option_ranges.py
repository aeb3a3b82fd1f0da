"""Numeric options are range-checked by their parser: one `error:` line, exit 2, nothing reinterpreted or started."""

from __future__ import annotations

import pytest

from dynlen.cli.main import main


@pytest.mark.parametrize(
    "argv, says",
    [
        (["eval", "--latency-repeats", "0"], "at least 1"),
        (["eval", "--latency-sample", "-1"], "at least 1"),
        (["eval", "--limit", "-5"], "at least 1"),
        (["finetune", "--lr", "-1"], "give a number above 0"),
        (["finetune", "--lr", "nan"], "give a number above 0"),
        (["finetune", "--max-steps", "-3"], "at least 1"),
        (["finetune", "--epochs", "0"], "give a number above 0"),
        (["lengthdrop", "--max-steps", "-3"], "at least 0 (0: train --epochs instead)"),
        (["search", "--trials", "0"], "at least 1"),
        (["search", "--latency-repeats", "0"], "at least 1"),
        (["search", "--heartbeat", "0"], "at least 1"),
        (["answer", "--top-k", "0"], "at least 1"),
        (["regress", "check", "--repeats", "0"], "at least 1"),
        (["eval", "--limit", "abc"], "'abc': give a whole number"),
        (["eval", "--no-such-option"], "unrecognized arguments"),
        (["eval", "--threads", "2"], "unrecognized arguments"),  # threads are a setting of the Python API
    ],
)
def test_out_of_range_option_is_one_line(capsys, argv, says):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: dynlen") and says in err and len(err.splitlines()) == 1, err
