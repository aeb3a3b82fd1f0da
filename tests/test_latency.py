"""Per-batch interleaving: every contender sees every batch once per round, in rotating order."""

from bench.latency import interleaved_batch_timings, ratio


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
    from bench.latency import Timing

    r = ratio(Timing((2.0, 3.0)), Timing((1.0, 1.5)))
    assert r.values == (2.0, 2.0) and r.median == 2.0
