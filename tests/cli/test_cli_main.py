"""The `dynlen` command: every sub-command mounted, one spelling per option, defaults in the help."""

from __future__ import annotations

import pytest

from dynlen.cli.main import COMMANDS, build_parser, main


def _subparsers(parser):
    return next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices


def test_help_lists_every_sub_command(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    for name in ("eval", "answer", "search", "choose", "report", "compare", "finetune", "lengthdrop", "regress"):
        assert name in COMMANDS and f"    {name}" in text


def test_version(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("dynlen ")


def test_every_sub_command_help_shows_defaults(capsys):
    for name in _subparsers(build_parser()):
        with pytest.raises(SystemExit):
            main([name, "--help"] if name != "regress" else [name, "check", "--help"])
        text = capsys.readouterr().out
        assert text.startswith(f"usage: dynlen {name}")
        if name not in ("compare",):
            assert "(default:" in text, name


def test_run_and_model_are_spelled_one_way(capsys):
    parser = build_parser()
    search = parser.parse_args(["search", "--run", "results/x"])
    assert search.run_dir == "results/x"
    assert parser.parse_args(["search"]).run_dir == "results/default"
    assert parser.parse_args(["finetune", "--model", "enc2"]).base == "enc2"
    report = parser.parse_args(["report", "--run", "results/z"])
    assert str(report.run) == "results/z"
    for name in ("search", "finetune"):
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = capsys.readouterr().out
        assert "--run-dir" not in text and "--base" not in text
    for old in (["search", "--run-dir", "reports/y"], ["finetune", "--base", "enc"]):
        with pytest.raises(SystemExit):
            parser.parse_args(old)


def test_report_without_a_run_is_one_line(capsys):
    assert main(["report"]) == 2
    assert capsys.readouterr().err.startswith("error: give the run folder")


def test_user_error_is_a_value_error_for_python_callers():
    from dynlen.bench.answer import Answerer
    from dynlen.errors import UserError

    assert issubclass(UserError, ValueError)
    with pytest.raises(ValueError, match="model folder not found"):
        Answerer("models/does-not-exist")
