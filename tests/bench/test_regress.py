import csv
import json

import torch

from dynlen.bench import regress
from dynlen.cli.main import main as cli_main
from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.search.records import configs_from_frontier_csv

TINY = {"layers": 4, "hidden": 32, "heads": 4, "ffn": 64, "vocab": 1200}


def _baseline(tmp_path):
    frontier = tmp_path / "frontier.csv"
    with frontier.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["kind", "values"])
        w.writeheader()
        w.writerow({"kind": "ratios", "values": "1;1;1;1"})  # keep-all rows are not reference configurations
        w.writerow({"kind": "ratios", "values": "1;0.6;0.4;0.2"})
        w.writerow({"kind": "counts", "values": "200;120;60;20"})
    path = tmp_path / "baseline.json"
    regress.update(configs_from_frontier_csv(frontier), path, features=3, repeats=1, shape=TINY)
    return path


def test_unchanged_code_passes_and_flops_speedup_is_real(tmp_path, capsys):
    path = _baseline(tmp_path)
    entries = json.loads(path.read_text())["entries"]
    assert [e["label"] for e in entries] == ["ratios:1,0.6,0.4,0.2", "counts:200,120,60,20"]
    assert all(e["flops_speedup"] > 1.3 for e in entries)
    assert cli_main(["regress", "check", "--baseline", str(path), "--no-latency"]) == 0
    assert "speedup check passed" in capsys.readouterr().out


def test_breaking_the_dropping_fails_the_check(tmp_path, monkeypatch, capsys):
    path = _baseline(tmp_path)
    original = LengthAdaptiveQA._dropping_layer

    def keep_everything(
        self,
        layer,
        hidden,
        valid,
        keep,
        positions,
        native=None,
        selection=None,
        index=0,
        attention="sdpa",
        counts=None,
        final=False,
        **rest,
    ):
        # the bug: tokens are "dropped" but every slot stays in the tensors (torch's path, which the
        # FLOP count runs: FlopCounterMode cannot see inside the native kernel)
        return original(
            self,
            layer,
            hidden,
            valid,
            torch.full_like(keep, hidden.shape[1]),
            positions,
            None,
            selection,
            index,
            attention,
            counts=[hidden.shape[1]] * hidden.shape[0],
            final=final,
            **rest,
        )

    monkeypatch.setattr(LengthAdaptiveQA, "_dropping_layer", keep_everything)
    assert cli_main(["regress", "check", "--baseline", str(path), "--no-latency"]) == 1
    out = capsys.readouterr().out
    assert "REGRESSED (FLOPs)" in out and "speedup REGRESSED" in out


def test_latency_below_the_floor_fails(tmp_path, capsys):
    path = _baseline(tmp_path)
    data = json.loads(path.read_text())
    for e in data["entries"]:
        e["latency_speedup"] = 50.0  # no real run can be 50x faster than keep-all with these configs
    path.write_text(json.dumps(data))
    assert cli_main(["regress", "check", "--baseline", str(path), "--repeats", "1"]) == 1
    assert "REGRESSED (latency)" in capsys.readouterr().out


def test_a_baseline_from_another_machine_checks_flops_only(tmp_path, capsys):
    """A latency floor measured on another CPU does not bind here; the FLOPs still must match."""
    path = _baseline(tmp_path)
    data = json.loads(path.read_text())
    assert data["machine"] == regress.machine_id()
    data["machine"] = "another CPU, 64 threads"
    for e in data["entries"]:
        e["latency_speedup"] = 50.0  # would fail here, were it this machine's
    path.write_text(json.dumps(data))
    assert cli_main(["regress", "check", "--baseline", str(path), "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "latency not compared: the baseline was measured on another CPU" in out and "make regress-update" in out
    for e in data["entries"]:
        e["flops_speedup"] *= 1.01
    path.write_text(json.dumps(data))
    assert cli_main(["regress", "check", "--baseline", str(path), "--repeats", "1"]) == 1


def test_missing_baseline_is_a_clear_error(tmp_path, capsys):
    assert cli_main(["regress", "check", "--baseline", str(tmp_path / "none.json")]) == 2
    assert "make regress-update" in capsys.readouterr().err


def test_update_stores_the_median_latency_of_its_runs(tmp_path, monkeypatch):
    """One lucky-fast run must not set the floor every later check is held to."""
    readings = iter([3.0, 1.0, 2.0])

    def fake_measure(configs, shape, features, repeats, latency):
        value = next(readings)
        return [regress.Measured(label, 1.5, value) for label in configs]

    monkeypatch.setattr(regress, "measure", fake_measure)
    config = regress.LengthConfig.parse("ratios:1,0.6,0.4,0.2")
    path = tmp_path / "baseline.json"
    regress.update({config.label(): config}, path, features=3, repeats=1, shape=TINY, runs=3)
    (entry,) = json.loads(path.read_text())["entries"]
    assert entry["latency_speedup"] == 2.0


def test_update_rejects_zero_runs(tmp_path):
    import pytest

    from dynlen.errors import UserError

    with pytest.raises(UserError, match="--runs"):
        regress.update({}, tmp_path / "b.json", features=3, repeats=1, shape=TINY, runs=0)


def test_policies_travel_from_the_frontier_csv_into_the_guard(tmp_path, capsys):
    """A look-ahead reference configuration is re-measured under its own policy, probes included."""
    frontier = tmp_path / "frontier.csv"
    with frontier.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["kind", "values", "significance"])
        w.writeheader()
        w.writerow({"kind": "ratios", "values": "1;0.6;0.4;0.2", "significance": "lookahead+question"})
        w.writerow({"kind": "ratios", "values": "1;0.6;0.4;0.2", "significance": "attention"})
    path = tmp_path / "baseline.json"
    regress.update(configs_from_frontier_csv(frontier), path, features=3, repeats=1, shape=TINY)
    entries = json.loads(path.read_text())["entries"]
    assert [e["label"] for e in entries] == ["ratios:1,0.6,0.4,0.2@lookahead+question", "ratios:1,0.6,0.4,0.2"]
    assert entries[0]["flops_speedup"] != entries[1]["flops_speedup"]  # probes and kept-query scores counted
    assert cli_main(["regress", "check", "--baseline", str(path), "--no-latency"]) == 0
