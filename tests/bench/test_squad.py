"""A SQuAD file the scorer cannot score as written is refused in one line naming the file and the question."""

from __future__ import annotations

import json

import pytest
from fixtures import squad_dict

from dynlen.bench.squad import load_squad
from dynlen.errors import UserError


def _first_qa(raw: dict) -> dict:
    return raw["data"][0]["paragraphs"][0]["qas"][0]


def _second_qa(raw: dict) -> dict:
    return raw["data"][0]["paragraphs"][0]["qas"][1]


def _duplicate_id(raw: dict) -> None:
    _second_qa(raw)["id"] = _first_qa(raw)["id"]


def _squad_v2(raw: dict) -> None:
    raw["version"] = "v2.0"


def _impossible(raw: dict) -> None:
    _second_qa(raw).update(is_impossible=True, answers=[], plausible_answers=[])


@pytest.mark.parametrize(
    "change, qid, says",
    [
        (lambda raw: _second_qa(raw).pop("answers"), "q2", "has no 'answers'"),
        (lambda raw: _second_qa(raw).update(answers=None), "q2", "'answers' is None"),
        (lambda raw: _second_qa(raw).update(answers=[]), "q2", "has no gold answer"),
        (_duplicate_id, "q1", "occurs twice"),
        (lambda raw: _second_qa(raw)["answers"][0].update(answer_start=0), "q2", "is not at answer_start 0"),
        (lambda raw: _second_qa(raw)["answers"][0].update(text=""), "q2", "empty text"),
        (lambda raw: _second_qa(raw).update(question="   "), "q2", "empty question"),
        (_impossible, "q2", "SQuAD 2.0"),
    ],
    ids=[
        "missing-answers",
        "null-answers",
        "empty-answers",
        "duplicate-id",
        "answer-off-start",
        "empty-answer",
        "empty-question",
        "impossible-question",
    ],
)
def test_unscorable_question_is_named(tmp_path, change, qid, says):
    raw = squad_dict()
    change(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError, match=says) as info:
        load_squad(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message and repr(qid) in message


def test_squad_v2_file_is_refused(tmp_path):
    raw = squad_dict()
    _squad_v2(raw)
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(raw))
    with pytest.raises(UserError, match=r"SQuAD 2\.0 file.*give a SQuAD 1\.1 file"):
        load_squad(path)


def test_well_formed_file_loads_every_question(tmp_path):
    path = tmp_path / "good.json"
    path.write_text(json.dumps(squad_dict()))
    data = load_squad(path)
    assert [ex.qid for ex in data.examples] == [f"q{i}" for i in range(1, 11)]
