import csv
from pathlib import Path

import pytest
from fixtures import scores_at

from dynlen.cli.main import main
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError
from dynlen.reports.compare import compare_runs, parse_spec
from dynlen.search.records import RunInfo, TrialPoint, write_run


def _point(number: int, f1: float, speed: float, baseline: str | None = None) -> TrialPoint:
    config = LengthConfig.keep_all(6) if baseline == "keep-all" else LengthConfig.constant(6, 1.0 - number / 100)
    return TrialPoint(
        number=number,
        config=config.to_dict(),
        label=config.label(),
        baseline=baseline,
        feasible=True,
        search=scores_at(f1, speed),
        heldout=scores_at(f1, speed),
    )


def _write(folder: Path, keep_all_f1: float, others: list[tuple[float, float]], **info) -> Path:
    points = [_point(0, keep_all_f1, 1.0, "keep-all")]
    points += [_point(n, f1, speed) for n, (f1, speed) in enumerate(others, start=1)]
    fields = dict(
        name=folder.name,
        model=f"models/{folder.name}",
        data="dev.json",
        search_split="dev[search]",
        heldout_split="dev[held-out]",
        search_questions=500,
        heldout_questions=1000,
        trials=len(points),
        sampler="tpe",
        cost="flops",
        budget=None,
        seconds=60.0,
        machine="test",
        date="2026-01-01",
        keep_all_heldout_f1=keep_all_f1,
    )
    fields.update(info)
    write_run(folder, RunInfo(**fields), points)
    return folder


@pytest.fixture
def two_runs(tmp_path):
    # standard: only keep-all is within 1 F1 of its own keep-all (72.9 floor); 1.25x falls to 70.8
    standard = _write(tmp_path / "standard", 73.9, [(70.8, 1.25), (62.0, 1.6)])
    # lengthdrop: 1.9x keeps 72.7 >= 73.5 - 1; 2.4x falls below
    lengthdrop = _write(tmp_path / "lengthdrop", 73.5, [(73.2, 1.4), (72.7, 1.9), (70.0, 2.4)])
    return standard, lengthdrop


def test_best_within_own_keep_all_minus_one(two_runs, tmp_path):
    standard, lengthdrop = two_runs
    _paths, (s, ld) = compare_runs([("standard", standard), ("lengthdrop", lengthdrop)], tmp_path / "out")
    assert s.best_flops.baseline == "keep-all" and s.best_flops.heldout.flops_speedup_vs_keep_all == 1.0
    assert ld.best_flops.heldout.flops_speedup_vs_keep_all == pytest.approx(1.9)
    assert ld.floor == pytest.approx(72.5)
    assert ld.best_latency.heldout.latency_speedup_vs_keep_all == pytest.approx(1.9 * 0.8)


def test_files_written_and_csv_rows(two_runs, tmp_path):
    standard, lengthdrop = two_runs
    out = tmp_path / "out"
    paths, _ = compare_runs([("standard", standard), ("lengthdrop", lengthdrop)], out)
    assert {p.name for p in paths} == {"compare.png", "compare.svg", "compare.csv", "frontiers.csv", "compare.md"}
    assert all(p.stat().st_size > 0 for p in paths)
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["run"] for r in rows] == ["standard", "lengthdrop"]
    assert float(rows[1]["best_flops_speedup_vs_keep_all"]) == pytest.approx(1.9)
    fronts = list(csv.DictReader((out / "frontiers.csv").open()))
    assert sum(r["run"] == "lengthdrop" for r in fronts) == 4  # every lengthdrop point is non-dominated
    assert "1.90x FLOPs" in (out / "compare.md").read_text()


def test_different_heldout_questions_refused(tmp_path):
    a = _write(tmp_path / "a", 73.0, [(72.5, 1.3)])
    b = _write(tmp_path / "b", 73.0, [(72.5, 1.3)], heldout_questions=300)
    with pytest.raises(UserError, match="heldout_questions"):
        compare_runs([("a", a), ("b", b)], tmp_path / "out")


def test_bad_spec_and_single_run_are_one_line_errors(two_runs, tmp_path, capsys):
    with pytest.raises(UserError, match="LABEL=RUN_DIR"):
        parse_spec("results/reference")
    assert main(["compare", f"only={two_runs[0]}", "--out", str(tmp_path / "o")]) == 2
    assert "at least two runs" in capsys.readouterr().err
    assert main(["compare", f"a={two_runs[0]}", f"b={tmp_path / 'missing'}", "--out", str(tmp_path / "o")]) == 2
    assert "no finished search" in capsys.readouterr().err


def test_cli_prints_headline(two_runs, tmp_path, capsys):
    standard, lengthdrop = two_runs
    assert main(["compare", f"standard={standard}", f"lengthdrop={lengthdrop}", "--out", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "lengthdrop: keep-all F1 73.50" in out and "1.90x FLOPs" in out
