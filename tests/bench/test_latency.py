"""Per-batch interleaving: every contender sees every batch once per round, in rotating order."""

from dynlen.bench.latency import interleaved_batch_timings, ratio


def test_batch_interleaving_rotates_order_and_sums_per_round():
    calls = []
    contenders = {name: (lambda b, name=name: calls.append((name, b))) for name in ("a", "b", "c")}
    timings = interleaved_batch_timings(contenders, batches=[0, 1, 2], repeats=2, warmup=1)
    assert all(len(t.samples) == 2 for t in timings.values())  # warm-up round dropped
    assert len(calls) == 3 * 3 * 3  # rounds x batches x contenders
    firsts = [calls[i][0] for i in range(0, len(calls), 3)]  # who ran first on each batch
    assert firsts[:3] == ["a", "b", "c"] and firsts[3:6] == ["b", "c", "a"]  # rotates by batch and round
    for start in range(0, len(calls), 3):
        assert len({b for _, b in calls[start : start + 3]}) == 1  # all contenders on one batch before the next


def test_ratio_is_reference_over_candidate_per_round():
    from dynlen.bench.latency import Timing

    r = ratio(Timing((2.0, 3.0)), Timing((1.0, 1.5)))
    assert r.values == (2.0, 2.0) and r.median == 2.0


def test_runner_latency_references_the_engines_own_keep_all(model_dir, squad_file, monkeypatch):
    """Keep-all runs through the same engine (and kernels) as the configuration; stock is separate."""
    from dynlen.bench.runner import QARunner
    from dynlen.bench.squad import load_squad
    from dynlen.engine.config import LengthConfig

    monkeypatch.setenv("DYNLEN_KERNELS", "off")
    runner = QARunner(str(model_dir), load_squad(str(squad_file)), batch_size=4, progress=False)
    seen, stock_calls = [], []
    engine_forward = runner.adaptive.forward
    monkeypatch.setattr(
        runner.adaptive, "forward", lambda *a, **k: seen.append(a[3].label()) or engine_forward(*a, **k)
    )
    stock_forward = runner.model.forward
    monkeypatch.setattr(runner.model, "forward", lambda *a, **k: stock_calls.append(1) or stock_forward(*a, **k))
    config = LengthConfig.parse("ratios:1,0.7,0.5,0.3")
    result = runner.latency(config, sample=2, repeats=1, warmup=0, with_bert_base=False, with_stock=True)
    keep_all = LengthConfig.keep_all(runner.num_layers).label()
    assert seen.count(config.label()) == seen.count(keep_all) == 2  # one round, two one-feature batches
    assert len(stock_calls) == 2
    assert set(result.extra["speedup_vs_stock"]) >= {"median", "min", "max"}
    assert "speedup_vs_stock" not in runner.latency(config, sample=2, repeats=1, warmup=0, with_bert_base=False).extra


def test_timing_shows_a_progress_bar_only_when_asked(capsys):
    contenders = {"a": lambda batch: None, "b": lambda batch: None}
    interleaved_batch_timings(contenders, batches=[0, 1], repeats=2, warmup=1)
    assert capsys.readouterr().err == ""
    interleaved_batch_timings(contenders, batches=[0, 1], repeats=2, warmup=1, progress="timing a, b")
    assert "timing a, b" in capsys.readouterr().err
