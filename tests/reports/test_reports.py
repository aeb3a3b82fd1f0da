"""Reports from a hand-made run whose frontier is known in advance; no model is run."""

import csv
import dataclasses
import random
import subprocess
import sys
from pathlib import Path

import pytest

from dynlen.bench.measurement import Measurement
from dynlen.cli.main import main
from dynlen.engine.config import LengthConfig
from dynlen.reports.report import make_report
from dynlen.reports.tables import frontier_rows
from dynlen.search.frontier import best_within, pareto_front
from dynlen.search.records import RunInfo, TrialPoint, read_run, write_run

ROOT = Path(__file__).resolve().parents[2]
FLOPS = "flops_speedup_vs_bert_base"
LATENCY = "latency_speedup_vs_bert_base"


def _scores(f1: float, speed: float, latency: float | None = None) -> Measurement:
    return Measurement(
        exact_match=f1 - 8.0,
        f1=f1,
        gflops_per_question=40.0 / speed,
        flops_speedup_vs_keep_all=speed,
        flops_speedup_vs_bert_base=speed,
        flops_speedup_vs_bert_base_padded384=speed * 1.8,
        latency_speedup_vs_keep_all=latency,
        latency_speedup_vs_bert_base=latency,
        latency_ms=None if latency is None else 20.0 / latency,
    )


def _point(
    number: int,
    f1: float,
    speed: float,
    heldout: bool = True,
    latency: float | None = None,
    feasible: bool = True,
    baseline: str | None = None,
) -> TrialPoint:
    config = LengthConfig.keep_all(4) if baseline == "keep-all" else LengthConfig.constant(4, 1.0 - number / 40)
    return TrialPoint(
        number=number,
        config=config.to_dict(),
        label=config.label(),
        baseline=baseline,
        feasible=feasible,
        search=_scores(f1 + 0.3, speed, latency),
        heldout=_scores(f1, speed, latency) if heldout else None,
    )


# Held-out (F1, FLOPs speedup, latency speedup) of the points that matter.
KNOWN = [
    _point(0, 88.0, 1.0, latency=1.0, baseline="keep-all"),
    _point(1, 87.8, 1.6, latency=1.5),
    _point(2, 87.6, 2.5, latency=1.9),  # fastest with F1 >= 87.5 (BERT-1%)
    _point(3, 86.0, 3.2, latency=2.6),
    _point(4, 85.0, 3.0, latency=2.7),  # FLOPs-dominated by 3, but fastest on latency
    _point(5, 88.2, 4.0, latency=3.0, feasible=False),  # would dominate everything, but misses the budget
    _point(6, 87.6, 2.5, latency=1.8),  # same FLOPs coordinates as 2: the lower number wins
    _point(7, 85.9, 3.2, latency=2.0),  # same speedup as 3, lower F1
    _point(8, 87.0, 1.5, latency=1.4, baseline="constant-0.90"),  # dominated baseline
    _point(9, 99.0, 9.0, heldout=False),  # search-split scores only
    _point(10, 87.1, 2.8, latency=2.1),  # fastest with F1 >= 87.0 (own-1%)
]
FLOPS_FRONT = [0, 1, 2, 10, 3]
LATENCY_FRONT = [0, 1, 2, 10, 3, 4]


def _sampled(seed: int = 0) -> list[TrialPoint]:
    """Search-only trials that sit well below the frontier."""
    rng = random.Random(seed)
    return [
        _point(n, rng.uniform(20.0, 80.0), rng.uniform(1.0, 5.0), heldout=False, latency=None) for n in range(11, 30)
    ]


def _info(keep_all_f1: float | None = 88.0, **kw) -> RunInfo:
    base = dict(
        name="synthetic",
        model="tiny/dynamic-bert",
        data="squad-dev.json",
        search_split="dev[0::2]",
        heldout_split="dev[1::2]",
        search_questions=500,
        heldout_questions=480,
        trials=30,
        sampler="tpe",
        cost="flops",
        budget="flops-speedup>=1.2",
        seconds=5400.0,
        machine="test box, 2 cores",
        date="2025-01-01",
        keep_all_heldout_f1=keep_all_f1,
    )
    base.update(kw)
    return RunInfo(**base)


@pytest.fixture
def run_dir(tmp_path) -> Path:
    folder = tmp_path / "run"
    write_run(folder, _info(), KNOWN + _sampled())
    return folder


def _numbers(points) -> list[int]:
    return [p.number for p in points]


def test_flops_frontier_is_the_hand_known_set():
    assert _numbers(pareto_front(KNOWN + _sampled(), FLOPS)) == FLOPS_FRONT


def test_latency_frontier_skips_points_without_latency():
    assert _numbers(pareto_front(KNOWN + _sampled(), LATENCY)) == LATENCY_FRONT


def test_frontier_does_not_depend_on_input_order():
    shuffled = KNOWN + _sampled()
    random.Random(1).shuffle(shuffled)
    assert _numbers(pareto_front(shuffled, FLOPS)) == FLOPS_FRONT


def test_search_split_frontier_uses_search_scores():
    front = _numbers(pareto_front(KNOWN + _sampled(), "flops_speedup_vs_keep_all", split="search"))
    assert front[-1] == 9 and 5 not in front


def test_best_within_picks_the_fastest_point_above_the_floor():
    assert best_within(KNOWN, FLOPS, 87.5).number == 2
    assert best_within(KNOWN, FLOPS, 87.0).number == 10
    assert best_within(KNOWN, LATENCY, 80.0).number == 4
    assert best_within(KNOWN, FLOPS, 95.0) is None


def test_frontier_csv_rows(run_dir):
    make_report(run_dir)
    with (run_dir / "frontier.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["number"]) for r in rows] == [0, 8, 1, 2, 10, 4, 3]  # by FLOPs speedup
    by_number = {int(r["number"]): r for r in rows}
    assert by_number[2]["f1"] == "87.6" and by_number[2]["flops_speedup_vs_bert_base"] == "2.5"
    assert by_number[2]["on_flops_frontier"] == "true" and by_number[2]["on_latency_frontier"] == "true"
    assert by_number[4]["on_flops_frontier"] == "false" and by_number[4]["on_latency_frontier"] == "true"
    assert by_number[8]["baseline"] == "constant-0.90" and by_number[8]["on_flops_frontier"] == "false"
    assert by_number[0]["kind"] == "ratios" and by_number[0]["values"] == "1.0;1.0;1.0;1.0"
    assert by_number[0]["baseline"] == "keep-all"


def test_empty_cells_for_unmeasured_latency(tmp_path):
    points = [_point(0, 88.0, 1.0, baseline="keep-all"), _point(1, 87.0, 2.0)]
    write_run(tmp_path, _info(), points)
    make_report(tmp_path)
    rows = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    assert rows[1]["latency_ms"] == "" and rows[1]["latency_speedup_vs_bert_base"] == ""
    assert "latency: not measured" in (tmp_path / "report.md").read_text()


def test_report_md_headline_and_provenance(run_dir):
    make_report(run_dir)
    text = (run_dir / "report.md").read_text()
    assert "Best speedup within BERT-1% (F1 ≥ 87.50): FLOPs: 2.50x" in text
    assert "Best speedup over keep-all within own-1% (keep-all F1 88.00 − 1 = 87.00): FLOPs: 2.80x" in text
    assert "latency: 2.10x" in text
    assert "dev[1::2] (480 questions)" in text and "1 h 30 min" in text and "20.0" in text  # trials per hour
    assert "padded384" in text and "2 × " in text
    assert len([line for line in text.splitlines() if line.startswith("| ")]) == 1 + 7


def test_none_reaches_the_line(run_dir, tmp_path):
    make_report(run_dir, tmp_path / "out", bert_f1=95.0)
    text = (tmp_path / "out" / "report.md").read_text()
    assert "FLOPs: none reaches it; closest: ratios:1,1,1,1 (F1 88.00, 1.00x)" in text


def test_plots_render_even_far_below_the_bert_line(tmp_path):
    low = [
        _point(
            p.number,
            p.heldout.f1 - 18.0 if p.heldout else p.search.f1 - 18.0,
            p.search.flops_speedup_vs_bert_base,
            heldout=p.heldout is not None,
            latency=p.search.latency_speedup_vs_bert_base,
            feasible=p.feasible,
            baseline=p.baseline,
        )
        for p in KNOWN + _sampled()
    ]
    write_run(tmp_path, _info(keep_all_f1=70.0), low)
    paths = make_report(tmp_path)
    assert {p.name for p in paths} == {"pareto.png", "pareto.svg", "frontier.csv", "report.md"}
    assert (tmp_path / "pareto.png").stat().st_size > 10_000
    assert (tmp_path / "pareto.svg").stat().st_size > 10_000
    assert "none reaches it" in (tmp_path / "report.md").read_text()


def test_frontier_rows_cover_both_frontiers_and_baselines():
    assert {r["number"] for r in frontier_rows(KNOWN)} == set(FLOPS_FRONT) | set(LATENCY_FRONT) | {8}


def test_cli_prints_paths_and_headline(run_dir, tmp_path, capsys):
    assert main(["report", "--run", str(run_dir), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "pareto.png" in out and "FLOPs: 2.50x" in out
    assert read_run(run_dir)[0].name == "synthetic"


def test_cli_help_exits_zero():
    done = subprocess.run(
        [sys.executable, "-m", "dynlen", "report", "--help"], cwd=ROOT, capture_output=True, text=True
    )
    assert done.returncode == 0 and "--run RUN" in done.stdout


def test_missing_run_folder_is_a_one_line_error(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "dynlen", "report", "--run", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1


def test_committed_reference_csvs_are_rebuilt_byte_for_byte(tmp_path):
    """The tables are DataFrames now; the files the regression guard and readers use must not change."""
    from dynlen.reports.compare import compare_runs
    from dynlen.reports.report import make_report

    root = Path(__file__).resolve().parents[2] / "results"
    make_report(root / "reference-lengthdrop", tmp_path / "ref")
    compare_runs(
        [("standard", root / "reference-standard"), ("lengthdrop", root / "reference-lengthdrop")], tmp_path / "cmp"
    )
    # Columns added since the committed file was written come last; the committed ones are unchanged.
    committed = list(csv.reader((root / "reference-lengthdrop" / "frontier.csv").open(newline="")))
    rebuilt = list(csv.reader((tmp_path / "ref" / "frontier.csv").open(newline="")))
    width = len(committed[0])
    assert [row[:width] for row in rebuilt] == committed
    if len(rebuilt[0]) == width:
        assert (tmp_path / "ref" / "frontier.csv").read_bytes() == (
            root / "reference-lengthdrop" / "frontier.csv"
        ).read_bytes()
    for name in ("compare.csv", "frontiers.csv"):
        assert (tmp_path / "cmp" / name).read_bytes() == (root / "lengthdrop-vs-standard" / name).read_bytes()


def test_svg_is_the_same_bytes_when_redrawn(run_dir, tmp_path):
    make_report(run_dir, tmp_path / "a")
    make_report(run_dir, tmp_path / "b")
    first = (tmp_path / "a" / "pareto.svg").read_bytes()
    assert first == (tmp_path / "b" / "pareto.svg").read_bytes()
    assert b"<dc:date>" not in first


def test_plot_title_has_no_file_path_and_names_keep_all_only():
    from dynlen.reports.plot import display_name

    assert display_name("models/minilm-squad-lengthdrop") == "minilm-squad-lengthdrop"
    assert display_name("/tmp/x/y/model") == "model"
    assert display_name("csarron/bert-base-uncased-squad-v1") == "csarron/bert-base-uncased-squad-v1"
    root = Path(__file__).resolve().parents[2] / "results"
    svg_dir = root / "reference-lengthdrop"
    import tempfile

    with tempfile.TemporaryDirectory() as out:
        make_report(svg_dir, Path(out))
        text = (Path(out) / "pareto.svg").read_text()
    assert "keep-all only within own-1%" in text and "7.70x within own-1%" not in text
    assert "speedup vs own keep-all" in text


# --- latency noise: the spread of each point's rounds, and keep-all timed against itself ----------
def _timed(point: TrialPoint, median: float, low: float, high: float, ms: float = 20.0) -> TrialPoint:
    spread = dict(
        latency_speedup_vs_keep_all=median,
        latency_speedup_vs_keep_all_min=low,
        latency_speedup_vs_keep_all_max=high,
        latency_ms=ms,
        latency_ms_min=ms * 0.95,
        latency_ms_max=ms * 1.1,
    )
    point.heldout = dataclasses.replace(point.heldout, **spread)
    return point


def _noisy_run(keep_all: tuple[float, float, float]) -> list[TrialPoint]:
    return [
        _timed(_point(0, 88.0, 1.0, latency=1.0, baseline="keep-all"), *keep_all, ms=30.0),
        _timed(_point(1, 87.0, 2.0, latency=1.7), 1.7, 1.6, 1.85, ms=17.5),
    ]


def test_latency_spread_columns_round_trip_through_the_csv(tmp_path):
    points = _noisy_run((1.01, 0.98, 1.04))
    write_run(tmp_path, _info(), points)
    make_report(tmp_path)
    header = (tmp_path / "frontier.csv").read_text().splitlines()[0].split(",")
    assert header[-4:] == [
        "latency_ms_min",
        "latency_ms_max",
        "latency_speedup_vs_keep_all_min",
        "latency_speedup_vs_keep_all_max",
    ]
    rows = list(csv.DictReader((tmp_path / "frontier.csv").open()))
    by_number = {int(r["number"]): Measurement.from_csv_row(r) for r in rows}
    for point in points:
        back, held = by_number[point.number], point.heldout
        assert back.config == point.length_config
        for column in ("latency_ms", "latency_ms_min", "latency_ms_max", "latency_speedup_vs_keep_all_min"):
            assert getattr(back, column) == getattr(held, column)
        assert back.latency_speedup_vs_keep_all_max == held.latency_speedup_vs_keep_all_max
        assert back.f1 == held.f1 and back.flops_speedup_vs_bert_base == held.flops_speedup_vs_bert_base
    assert "latency_ms_min" in (tmp_path / "report.md").read_text()


def test_committed_csv_without_the_spread_columns_still_loads():
    with (ROOT / "results" / "reference-lengthdrop" / "frontier.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert rows and "latency_ms_min" not in rows[0]
    loaded = [Measurement.from_csv_row(r) for r in rows]
    assert all(m.latency_ms_min is None and m.latency_speedup_vs_keep_all_max is None for m in loaded)
    assert all(m.latency_ms > 0 and m.config is not None for m in loaded)


def test_report_warns_when_keep_all_against_itself_is_off_by_more_than_its_spread(tmp_path):
    write_run(tmp_path, _info(), _noisy_run((1.8, 1.75, 1.86)))
    make_report(tmp_path)
    lines = [line for line in (tmp_path / "report.md").read_text().splitlines() if "Latency warning" in line]
    assert len(lines) == 1
    assert "1.80x" in lines[0] and "1.75–1.86" in lines[0]


def test_report_has_no_warning_when_keep_all_is_within_its_noise(tmp_path):
    write_run(tmp_path, _info(), _noisy_run((1.01, 0.98, 1.04)))
    make_report(tmp_path)
    assert "Latency warning" not in (tmp_path / "report.md").read_text()
    write_run(tmp_path, _info(), KNOWN)  # no spread recorded (runs from before it was kept): nothing to judge
    make_report(tmp_path)
    assert "Latency warning" not in (tmp_path / "report.md").read_text()


def test_a_run_over_two_precisions_draws_each_precision_s_frontier(tmp_path):
    from dynlen.reports.plot import by_precision

    def at_bf16(point):
        config = LengthConfig.from_dict(point.config).with_precision("bf16")
        return dataclasses.replace(point, number=point.number + 100, config=config.to_dict(), label=config.label())

    points = KNOWN + [at_bf16(p) for p in KNOWN]
    groups = by_precision(points)
    assert list(groups) == ["fp32", "bf16"] and len(groups["bf16"]) == len(KNOWN)
    write_run(tmp_path / "run", _info(), points)
    make_report(tmp_path / "run", tmp_path / "out")
    svg = (tmp_path / "out" / "pareto.svg").read_text()
    assert "bf16 frontier" in svg and "fp32 frontier" in svg
    write_run(tmp_path / "run-single", _info(), KNOWN)
    make_report(tmp_path / "run-single", tmp_path / "single")
    assert "frontier" in (tmp_path / "single" / "pareto.svg").read_text()
    assert "fp32 frontier" not in (tmp_path / "single" / "pareto.svg").read_text()


@pytest.mark.parametrize("name", ["run.json", "trials.json"])
@pytest.mark.parametrize("command", ["report", "choose"])
def test_a_truncated_run_file_is_one_line(run_dir, tmp_path, capsys, name, command):
    path = run_dir / name
    path.write_text(path.read_text()[:-25])  # a disk that filled up during a write without a rename
    argv = (
        ["report", "--run", str(run_dir), "--out", str(tmp_path / "r")]
        if command == "report"
        else ["choose", "--run", str(run_dir)]
    )
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {path} is damaged") and "re-run the same `dynlen search`" in err
    assert len(err.splitlines()) == 1


def test_run_files_are_written_whole_or_not_at_all(run_dir, monkeypatch):
    import os

    before = {name: (run_dir / name).read_bytes() for name in ("run.json", "trials.json")}

    def full_disk(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)  # the last step of a write fails: the old files stay whole
    with pytest.raises(OSError):
        write_run(run_dir, _info(), KNOWN)
    assert {name: (run_dir / name).read_bytes() for name in before} == before
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(before)  # no temporary file left behind


# --- latency budgets judged with their spread: choose refuses what the timing cannot tell -------
def test_keep_all_is_never_faster_than_itself_in_the_headline(tmp_path):
    points = [
        _timed(_point(0, 88.0, 1.0, latency=1.2, baseline="keep-all"), 1.2, 1.1, 1.3),
        _timed(_point(1, 87.5, 2.0, latency=0.65), 0.65, 0.6, 0.7),
    ]
    write_run(tmp_path, _info(), points)
    make_report(tmp_path)
    own = next(line for line in (tmp_path / "report.md").read_text().splitlines() if "own-1%" in line)
    assert "latency: keep-all only (1.00x" in own and "1.20x" not in own


def test_a_latency_budget_on_a_noisy_run_refuses_to_choose(tmp_path):
    from dynlen.search.budget import parse_budget
    from dynlen.search.choose import TooNoisyToChoose, choose

    points = [
        _timed(_point(0, 88.0, 1.0, latency=1.2, baseline="keep-all"), 1.2, 1.15, 1.25),
        _timed(_point(1, 87.5, 1.5, latency=1.3), 1.3, 1.25, 1.35),
    ]
    write_run(tmp_path, _info(budget="latency-speedup>=1.1", cost="latency", extra={"weights_sha": "0123abcd"}), points)
    with pytest.raises(TooNoisyToChoose, match="timed too briefly to choose for latency-speedup>=1.1.*1.20x"):
        choose(tmp_path, parse_budget("latency-speedup>=1.1"))
    make_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "**Timed too briefly:**" in text and "Within timing noise of latency-speedup>=1.1" in text


def test_a_latency_budget_on_a_quiet_run_chooses_only_what_clears_the_edge(tmp_path):
    from dynlen.search.budget import parse_budget
    from dynlen.search.choose import choose

    points = [
        _timed(_point(0, 88.0, 1.0, latency=1.0, baseline="keep-all"), 1.01, 0.99, 1.02),
        _timed(_point(1, 87.9, 1.2, latency=1.12), 1.12, 1.08, 1.15),  # its interval holds 1.1
        _timed(_point(2, 87.5, 1.6, latency=1.4), 1.4, 1.35, 1.45),
    ]
    write_run(tmp_path, _info(budget="latency-speedup>=1.1", cost="latency", extra={"weights_sha": "0123abcd"}), points)
    best, _ = choose(tmp_path, parse_budget("latency-speedup>=1.1"))
    assert best.number == 2
    best, _ = choose(tmp_path, parse_budget("latency-speedup>=0.9"))
    assert best.number == 0  # keep-all, exactly 1x itself, has the best F1


def test_plot_names_the_data_set_not_its_path():
    from dynlen.reports.plot import dataset_name

    assert dataset_name("../shared/data/squad/dev-v1.1.json[held-out]") == "dev-v1.1[held-out]"
    assert dataset_name("dev[1::2]") == "dev[1::2]"
