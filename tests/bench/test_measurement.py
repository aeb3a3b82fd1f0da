"""The one measurement type and its three file forms: metrics.json, the study's record, a CSV row."""

import dataclasses
import json

import pytest

from dynlen.bench.latency import LatencyResult, Ratio
from dynlen.bench.measurement import CSV_COLUMNS, RECORD_FIELDS, Measurement
from dynlen.engine.config import LengthConfig
from dynlen.engine.costs import FlopReport


def _measured() -> Measurement:
    dynamic = FlopReport(
        flops=2_000_000_000, keep_all_flops=3_000_000_000, bert_base_flops=30_000_000_000, features=12, questions=10
    )
    padded = FlopReport(
        flops=5_000_000_000, keep_all_flops=8_000_000_000, bert_base_flops=90_000_000_000, features=12, questions=10
    )
    latency = LatencyResult(
        batch_size=1,
        features=4,
        repeats=3,
        ms_per_feature=7.5,
        ms_per_feature_min=7.1,
        ms_per_feature_max=8.25,
        vs_keep_all=Ratio((1.4, 1.5, 1.62)),
        vs_bert_base=Ratio((9.0, 9.5, 10.0)),
    )
    measured = Measurement.from_flops(
        dynamic,
        padded,
        exact_match=61.0,
        f1=70.25,
        tokens_kept_per_layer=[120.0, 80.5, 40.25],
        config=LengthConfig.parse("ratios:1,0.7,0.3@lookahead+question"),
    ).with_latency(latency)
    return dataclasses.replace(measured, f1_delta_low=-1.5, f1_delta_high=-0.25)


def test_flops_and_latency_fill_the_measurement():
    m = _measured()
    assert m.gflops_per_question == pytest.approx(0.2) and m.flops_speedup_vs_keep_all == pytest.approx(1.5)
    assert m.flops_speedup_vs_bert_base == pytest.approx(15.0)
    assert m.flops_speedup_vs_bert_base_padded384 == pytest.approx(18.0)
    assert m.flops_speedup_vs_keep_all_padded384 == pytest.approx(1.6)
    assert (m.questions, m.features) == (10, 12)
    assert (m.latency_ms, m.latency_ms_min, m.latency_ms_max) == (7.5, 7.1, 8.25)
    assert (m.latency_speedup_vs_keep_all, m.latency_speedup_vs_keep_all_min, m.latency_speedup_vs_keep_all_max) == (
        1.5,
        1.4,
        1.62,
    )
    assert m.latency_speedup_vs_bert_base == 9.5


def test_metrics_json_form_round_trips():
    m = _measured()
    raw = json.loads(json.dumps(m.to_json()))
    assert raw["speedups"]["flops_vs_keep_all"] == m.flops_speedup_vs_keep_all
    assert raw["latency"]["speedup_vs_keep_all"] == {"median": 1.5, "min": 1.4, "max": 1.62}
    assert raw["config_label"] == "ratios:1,0.7,0.3@lookahead+question"
    assert Measurement.from_json(raw) == m


def test_metrics_json_without_latency_or_interval_reads_them_as_none():
    old = {
        "questions": 4,
        "features": 4,
        "config": {"kind": "ratios", "values": [1.0, 0.5]},
        "exact_match": 50.0,
        "f1": 60.0,
        "speedups": {"flops_vs_bert_base": 9.0, "flops_vs_keep_all": 1.5, "latency_vs_keep_all": None},
        "flops": {"unit": "FLOPs", "gflops_per_question": 0.4},
        "latency": None,
        "tokens_kept_per_layer": [10.0, 5.0],
    }
    m = Measurement.from_json(old)
    assert m.gflops_per_question == 0.4 and m.config == LengthConfig("ratios", (1.0, 0.5))
    assert m.latency_ms is None and m.latency_speedup_vs_keep_all_min is None and m.f1_delta_low is None


def test_study_record_round_trips_and_old_records_read():
    m = _measured()
    record = json.loads(json.dumps(m.to_record()))
    assert set(record) == set(RECORD_FIELDS) and "config" not in record
    assert Measurement.from_record(record, m.config) == m
    legacy = {  # what a study stored before the measurement type (the old Scores fields only)
        "exact_match": 50.0,
        "f1": 60.0,
        "gflops_per_question": 2.0,
        "flops_speedup_vs_keep_all": 2.0,
        "flops_speedup_vs_bert_base": 10.0,
        "flops_speedup_vs_bert_base_padded384": None,
        "latency_speedup_vs_keep_all": 1.5,
        "latency_speedup_vs_bert_base": None,
        "latency_ms": 12.0,
        "f1_delta_low": None,
        "f1_delta_high": None,
    }
    old = Measurement.from_record(legacy)
    assert old.latency_speedup_vs_keep_all == 1.5 and old.latency_ms_min is None and old.tokens_kept_per_layer is None


def test_csv_row_round_trips_through_strings():
    m = _measured()
    row = {k: "" if v is None else str(v) for k, v in m.csv_row().items()}
    assert {"kind", "values", "significance"} <= set(row) and set(CSV_COLUMNS) <= set(row)
    back = Measurement.from_csv_row(row)
    assert back.config == m.config
    for column in CSV_COLUMNS:
        assert getattr(back, column) == getattr(m, column), column
