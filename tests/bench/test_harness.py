"""The benchmark harness: one declaration of the shared options, and a result.json every script leaves."""

import argparse
import json

import pytest
from fixtures import load_benchmark

from dynlen.bench import harness
from dynlen.errors import UserError

SCRIPTS = (
    "evaluator_throughput",
    "flops_fidelity",
    "gemm_precision",
    "keep_all_overhead",
    "retention",
    "sampler_comparison",
    "selection_cost",
    "small_gemm_throughput",
    "train_precision",
    "workers",
)


def test_shared_options_have_help_and_a_default_shown():
    parser = harness.parser("d", *harness.OPTIONS, out="runs/x")
    for action in parser._actions:
        if action.dest == "help":
            continue
        assert action.help and "(default:" in action.help, action.dest
    args = parser.parse_args([])
    assert args.out == "runs/x" and args.device == "auto" and args.threads is None


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_builds_its_parser_in_the_harness(name, capsys):
    script = load_benchmark(name)
    assert script.harness is harness
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0
    assert "--out OUT" in capsys.readouterr().out


def test_run_writes_the_command_commit_machine_and_figures(tmp_path):
    def work(args: argparse.Namespace, figures: harness.Figures) -> None:
        figures["speedup"] = 1.5

    args = argparse.Namespace(out=str(tmp_path / "out"))
    assert harness.run(work, args, ["--out", str(tmp_path / "out")], "benchmarks/example.py") == 0
    record = json.loads((tmp_path / "out" / "result.json").read_text())
    assert record["benchmark"] == "example"
    assert record["command"] == f"python benchmarks/example.py --out {tmp_path / 'out'}"
    assert record["figures"] == {"speedup": 1.5}
    assert "cores" in record["machine"] and "torch" in record["machine"]
    assert record["commit"] is None or len(record["commit"]) == 40
    assert record["date"].endswith("UTC")


def test_a_user_error_is_one_line_and_leaves_no_result(tmp_path, capsys):
    def work(args, figures):
        figures["half"] = 1.0
        raise UserError("no such model; give --model a folder")

    args = argparse.Namespace(out=str(tmp_path))
    assert harness.run(work, args, [], "benchmarks/example.py") == 2
    assert capsys.readouterr().err == "error: no such model; give --model a folder\n"
    assert not (tmp_path / "result.json").exists()


def test_evaluator_throughput_leaves_a_result_the_docs_tabulate(model_dir, squad_file, tmp_path):
    from dynlen.reports import docs

    out = tmp_path / "results" / "bench-eval"
    script = load_benchmark("evaluator_throughput")
    options = ["--questions", "3", "--batch-size", "2", "--repeats", "1", "--out", str(out)]
    assert script.main(["--model", str(model_dir), "--data", str(squad_file), *options]) == 0
    record = json.loads((out / "result.json").read_text())
    figures = record["figures"]
    assert figures["questions"] == 3 and figures["throughput_ratio"] > 0
    assert figures["anchor_f1"] == pytest.approx(figures["suite_f1"])
    page = docs.results_page(tmp_path / "results")
    assert "`results/bench-eval`" in page and f"throughput_ratio {figures['throughput_ratio']:.4g}" in page
