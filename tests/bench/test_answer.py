"""The Answerer: pipeline-shaped answers from the tiny random BERT, with and without token dropping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fixtures import ARTICLES

from dynlen.bench.answer import Answerer
from dynlen.bench.features import build_features
from dynlen.bench.postprocess import predict_answers
from dynlen.bench.squad import Example
from dynlen.engine.config import LengthConfig
from dynlen.errors import UserError

ROOT = Path(__file__).resolve().parents[2]
DROPPING = "ratios:1,0.5,0.5,0.25"


def _pairs() -> list[tuple[str, str]]:
    return [
        (question, context) for _t, paragraphs in ARTICLES for context, qas in paragraphs for _i, question, _a in qas
    ]


def _long_context() -> str:
    """Well over 384 tokens, so the question needs several overlapping windows."""
    sentences = [context for _t, paragraphs in ARTICLES for context, _q in paragraphs]
    return " ".join(sentences * 8)


@pytest.fixture(scope="module")
def answerer(model_dir) -> Answerer:
    return Answerer(str(model_dir), batch_size=4)


def _check_result(result: dict, context: str) -> None:
    assert set(result) == {"answer", "score", "start", "end"}
    assert isinstance(result["answer"], str) and result["answer"]
    assert isinstance(result["start"], int) and isinstance(result["end"], int)
    assert 0 <= result["start"] < result["end"] <= len(context)
    assert result["answer"] == context[result["start"] : result["end"]]
    assert isinstance(result["score"], float) and 0.0 < result["score"] <= 1.0


def test_single_call_returns_one_pipeline_shaped_dict(answerer):
    question, context = _pairs()[0]
    result = answerer(question, context)
    assert isinstance(result, dict)
    _check_result(result, context)


def test_batched_call_returns_a_list_matching_one_by_one_calls(answerer):
    pairs = _pairs()
    results = answerer([q for q, _c in pairs], [c for _q, c in pairs])
    assert isinstance(results, list) and len(results) == len(pairs)
    for (question, context), result in zip(pairs, results):
        _check_result(result, context)
        alone = answerer(question, context)
        assert (alone["answer"], alone["start"], alone["end"]) == (result["answer"], result["start"], result["end"])
        assert alone["score"] == pytest.approx(result["score"], rel=1e-4)


def test_keep_all_matches_the_stock_model_through_predict_answers(answerer):
    pairs = _pairs() + [("Where did the cat sit?", _long_context())]
    examples = [Example(str(i), "", c, q, (), ()) for i, (q, c) in enumerate(pairs)]
    feats = build_features(examples, answerer.tokenizer)
    starts, ends = [], []
    with torch.inference_mode():
        for ids, types in zip(feats.input_ids, feats.token_type_ids):
            out = answerer.model(input_ids=torch.tensor([ids]), token_type_ids=torch.tensor([types]))
            starts.append(out.start_logits[0].numpy())
            ends.append(out.end_logits[0].numpy())
    expected = predict_answers(examples, feats, starts, ends)
    results = answerer([q for q, _c in pairs], [c for _q, c in pairs])
    for ex, result in zip(examples, results):
        want = expected[ex.qid]
        assert (result["answer"], result["start"], result["end"]) == (want["text"], want["start"], want["end"])


def test_score_is_the_context_softmax_product(answerer):
    question, context = _pairs()[3]
    result = answerer(question, context)
    feats = build_features([Example("0", "", context, question, (), ())], answerer.tokenizer)
    assert len(feats) == 1
    with torch.inference_mode():
        out = answerer.model(input_ids=torch.tensor(feats.input_ids), token_type_ids=torch.tensor(feats.token_type_ids))
    offsets = feats.offsets[0]
    ctx = [t for t, o in enumerate(offsets) if o is not None]
    s = next(t for t in ctx if offsets[t][0] == result["start"])
    e = next(t for t in ctx if offsets[t][1] == result["end"])
    p_start = out.start_logits[0, ctx].double().softmax(0)[ctx.index(s)]
    p_end = out.end_logits[0, ctx].double().softmax(0)[ctx.index(e)]
    assert result["score"] == pytest.approx(float(p_start * p_end), rel=1e-4)


def test_dropping_configuration_still_returns_valid_spans(model_dir):
    answerer = Answerer(str(model_dir), DROPPING)
    assert not answerer.config.is_keep_all
    pairs = _pairs()
    for (_q, context), result in zip(pairs, answerer([q for q, _c in pairs], [c for _q, c in pairs])):
        _check_result(result, context)


def test_long_context_is_split_into_windows_and_answered(answerer):
    context = _long_context()
    question = "Where did the cat sit?"
    feats = build_features([Example("0", "", context, question, (), ())], answerer.tokenizer)
    assert len(feats) > 1
    _check_result(answerer(question, context), context)


def test_wrong_layer_count_names_both_counts(model_dir):
    with pytest.raises(UserError, match=r"3 values .* 4 encoder layers"):
        Answerer(str(model_dir), "ratios:1,0.5,0.5")


def test_choose_style_json_is_loaded(model_dir, tmp_path):
    path = tmp_path / "chosen.json"
    path.write_text(json.dumps({"config": {"kind": "ratios", "values": [1, 0.5, 0.5, 0.25]}, "f1": 80.0}))
    for spec in (str(path), path):
        answerer = Answerer(str(model_dir), spec)
        assert answerer.config == LengthConfig("ratios", (1, 0.5, 0.5, 0.25))
    question, context = _pairs()[0]
    _check_result(answerer(question, context), context)


def test_model_object_needs_a_tokenizer(answerer):
    with pytest.raises(UserError, match="tokenizer"):
        Answerer(answerer.model)
    again = Answerer(answerer.model, tokenizer=answerer.tokenizer)
    question, context = _pairs()[1]
    assert again(question, context)["answer"] == answerer(question, context)["answer"]


def test_mismatched_or_empty_inputs_are_user_errors(answerer):
    with pytest.raises(UserError, match="2 questions but 1 contexts"):
        answerer(["a?", "b?"], ["the cat"])
    with pytest.raises(UserError, match="empty"):
        answerer("Where?", "   ")
    assert answerer([], []) == []


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "dynlen", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_answers_one_question(model_dir, tmp_path):
    question, context = _pairs()[0]
    out = tmp_path / "answer.json"
    proc = _run_cli(
        "answer",
        "--model",
        str(model_dir),
        "--config",
        DROPPING,
        "--question",
        question,
        "--context",
        context,
        "--out",
        str(out),
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert "answer" in printed and printed["answer"] == context[printed["start"] : printed["end"]]
    assert json.loads(out.read_text()) == printed


def test_cli_reads_jsonl_and_reports_user_errors(model_dir, tmp_path):
    pairs = _pairs()[:3]
    lines = tmp_path / "in.jsonl"
    lines.write_text("\n".join(json.dumps({"question": q, "context": c}) for q, c in pairs) + "\n")
    proc = _run_cli("answer", "--model", str(model_dir), "--input", str(lines))
    assert proc.returncode == 0, proc.stderr
    assert [r["answer"] for r in json.loads(proc.stdout)] == [
        c[r["start"] : r["end"]] for (_q, c), r in zip(pairs, json.loads(proc.stdout))
    ]
    bad = _run_cli(
        "answer", "--model", str(model_dir), "--config", "ratios:1,0.5", "--question", "q?", "--context", "c"
    )
    assert bad.returncode == 2 and bad.stderr.startswith("error:") and "4 encoder layers" in bad.stderr


def test_cli_help_exits_zero():
    proc = _run_cli("answer", "--help")
    assert proc.returncode == 0 and "--question" in proc.stdout


def test_question_too_long_for_the_stride_is_a_user_error(answerer):
    """The fast tokenizer would abort with a Rust panic instead of raising."""
    with pytest.raises(UserError, match="at most 252 tokens"):
        answerer("cat " * 253, _long_context())


# --- the transformers 4 pipeline's call forms and keywords -----------------------------------
def test_pipeline_call_forms_give_the_same_answer(answerer):
    question, context = _pairs()[0]
    expected = answerer(question, context)
    assert answerer(question=question, context=context) == expected
    assert answerer({"question": question, "context": context}) == expected
    assert answerer(X={"question": question, "context": context}) == expected
    pairs = _pairs()[:3]
    listed = answerer([{"question": q, "context": c} for q, c in pairs])
    assert listed == answerer([q for q, _c in pairs], [c for _q, c in pairs])


def test_top_k_lists_distinct_spans_best_first(answerer):
    question, context = _pairs()[0]
    top = answerer(question, context, top_k=3)
    assert isinstance(top, list) and len(top) == 3
    for result in top:
        _check_result(result, context)
    assert len({(r["start"], r["end"]) for r in top}) == 3
    one = answerer(question, context)
    assert (top[0]["start"], top[0]["end"]) == (one["start"], one["end"])
    assert top[0]["score"] == pytest.approx(one["score"], rel=1e-5)
    assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)  # one window: same order
    batched = answerer([question, question], [context, context], top_k=2)
    assert len(batched) == 2 and all(isinstance(r, list) and len(r) == 2 for r in batched)


def test_the_pipelines_deprecated_topk_warns_naming_the_version_that_removes_it(answerer):
    question, context = _pairs()[0]
    with pytest.warns(DeprecationWarning, match="write top_k= .removed in dynlen 0.2.0"):
        old = answerer(question, context, topk=2)
    assert old == answerer(question, context, top_k=2)


def test_handle_impossible_answer_ranks_the_empty_answer_among_the_spans(answerer):
    question, context = _pairs()[0]
    many = answerer(question, context, top_k=1000, handle_impossible_answer=True)
    empty = [r for r in many if r["answer"] == ""]
    assert len(empty) == 1 and empty[0]["start"] == empty[0]["end"] == 0 and 0.0 < empty[0]["score"] <= 1.0
    best = answerer(question, context, handle_impossible_answer=True)
    assert best == many[0]


def test_pipeline_setting_names_are_aliases_of_the_old_ones(model_dir, answerer):
    question, context = _pairs()[0]
    short = answerer(question, context, max_answer_len=1)
    assert len(answerer.tokenizer(short["answer"], add_special_tokens=False)["input_ids"]) == 1
    assert answerer(question, context, max_answer_length=1) == short
    built = Answerer(str(model_dir), doc_stride=64, max_seq_len=128, max_answer_len=5, device=-1)
    assert (built.stride, built.max_length, built.max_answer_length) == (64, 128, 5)
    assert built.device.type == "cpu"
    with pytest.raises(UserError, match="same setting"):
        Answerer(str(model_dir), stride=32, doc_stride=64)
    with pytest.raises(UserError, match="unexpected keyword"):
        answerer(question, context, beam_size=3)
    with pytest.raises(UserError, match="stride"):
        answerer(question, context, doc_stride=500)


def test_max_question_len_truncates_instead_of_failing(answerer):
    result = answerer("cat " * 253, _long_context(), max_question_len=64)
    assert isinstance(result["answer"], str)


def test_cli_takes_device_and_top_k(model_dir):
    question, context = _pairs()[0]
    proc = _run_cli(
        "answer",
        "--model",
        str(model_dir),
        "--device",
        "cpu",
        "--top-k",
        "2",
        "--question",
        question,
        "--context",
        context,
    )
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert isinstance(printed, list) and len(printed) == 2


# --- loading options --------------------------------------------------------------------------
def test_loading_passes_revision_remote_code_and_the_environment_token(model_dir, monkeypatch):
    from transformers import AutoModelForQuestionAnswering

    from dynlen.bench import model_io

    seen = {}
    original = AutoModelForQuestionAnswering.from_pretrained

    def spy(name, **kwargs):
        seen.update(kwargs)
        return original(name, **{k: v for k, v in kwargs.items() if k != "token"})

    monkeypatch.setattr(AutoModelForQuestionAnswering, "from_pretrained", spy)
    monkeypatch.setenv("HF_TOKEN", "hf_example")
    model = model_io.load_qa_model(str(model_dir), revision="main", dtype="bfloat16")
    assert seen["revision"] == "main" and seen["token"] == "hf_example" and seen["trust_remote_code"] is False
    assert next(model.parameters()).dtype == torch.bfloat16
    monkeypatch.delenv("HF_TOKEN")
    seen.clear()
    model_io.load_qa_model(str(model_dir), trust_remote_code=True)
    assert seen["trust_remote_code"] is True and "token" not in seen


def test_python_api_errors_name_the_argument_not_a_make_variable(tmp_path):
    with pytest.raises(UserError) as missing:
        Answerer(str(tmp_path / "no-such-model"))
    message = str(missing.value)
    assert "model folder not found" in message and "MODEL=" not in message and "Give model=" not in message
    with pytest.raises(UserError, match="dtype"):
        from dynlen.bench.model_io import load_qa_model

        load_qa_model(str(tmp_path), dtype="float8")
