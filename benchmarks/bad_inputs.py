"""Bad inputs an operator can give, each through the ``dynlen`` command line, and what became of them.

Builds a tiny random BERT folder and the ten-question SQuAD fixture (tests/fixtures.py) in a temp
folder, damages copies of them one way each, runs the command in this process and sorts every
outcome: ``clean`` (exit 2 after exactly one ``error:`` line), ``traceback`` (an exception
escaped), ``accepted`` (exit 0: a wrong input taken as a right one) or ``other``. Prints one row per
input and the counts; exits 1 unless every input is clean. Storage outages are not inputs: the
worker tests in tests/search/test_workers.py stop a real server under running workers.

    .venv/bin/python benchmarks/bad_inputs.py
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import sys
import tempfile
import traceback
from collections import Counter
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from fixtures import save_tiny_model, squad_dict, tiny_bert_config  # noqa: E402

from dynlen.cli.main import main  # noqa: E402

Case = tuple[str, Callable[[Path], list[str]]]


# --- damaged copies -------------------------------------------------------------------------
def squad_with(base: Path, name: str, change: Callable[[dict], None]) -> str:
    raw = squad_dict()
    change(raw)
    path = base / f"squad-{name}.json"
    path.write_text(json.dumps(raw))
    return str(path)


def model_with(base: Path, name: str, change: Callable[[Path], None]) -> str:
    folder = base / f"model-{name}"
    shutil.copytree(base / "model", folder)
    change(folder)
    return str(folder)


def _qa(raw: dict, n: int = 1) -> dict:
    return raw["data"][0]["paragraphs"][0]["qas"][n]


def _cut(path: Path, keep: int) -> None:
    path.write_bytes(path.read_bytes()[:keep])


def _small_vocabulary(folder: Path) -> None:
    from transformers import BertForQuestionAnswering

    config = tiny_bert_config()
    config.vocab_size = 20
    BertForQuestionAnswering._from_config(config).save_pretrained(folder)


def _no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


def _config_file(base: Path, name: str, blob: bytes) -> str:
    path = base / f"config-{name}.json"
    path.write_bytes(blob)
    return str(path)


def _run_copy(base: Path, name: str, file: str) -> str:
    folder = base / f"run-{name}"
    shutil.copytree(base / "run", folder)
    path = folder / file
    _cut(path, len(path.read_bytes()) - 25)
    return str(folder)


# --- the inputs -----------------------------------------------------------------------------
def evaluate(base: Path, *args: str, model: str | None = None, data: str | None = None) -> list[str]:
    return [
        "eval", "--model", model or str(base / "model"), "--data", data or str(base / "squad.json"),
        "--no-latency", "--quiet", "--out", str(base / "out"), *args,
    ]  # fmt: skip


def search(base: Path, *args: str, run: str = "search-run") -> list[str]:
    return [
        "search", "--model", str(base / "model"), "--data", str(base / "squad.json"), "--run",
        str(base / run), "--trials", "6", "--search-questions", "0", "--heldout-questions", "0",
        "--latency-sample", "2", "--latency-repeats", "1", "--no-report", *args,
    ]  # fmt: skip


SQUAD_CASES: list[Case] = [
    (f"squad: {name}", lambda b, n=name, c=change: evaluate(b, data=squad_with(b, n, c)))
    for name, change in [
        ("answers missing", lambda r: _qa(r).pop("answers")),
        ("answers null", lambda r: _qa(r).update(answers=None)),
        ("answers empty", lambda r: _qa(r).update(answers=[])),
        ("SQuAD 2.0 version", lambda r: r.update(version="v2.0")),
        ("is_impossible question", lambda r: _qa(r).update(is_impossible=True)),
        ("duplicate question id", lambda r: _qa(r).update(id=_qa(r, 0)["id"])),
        ("answer text not at answer_start", lambda r: _qa(r)["answers"][0].update(answer_start=0)),
        ("empty answer text", lambda r: _qa(r)["answers"][0].update(text="")),
        ("empty question", lambda r: _qa(r).update(question=" ")),
        ("null context", lambda r: r["data"][0]["paragraphs"][0].update(context=None)),
        ("textual answer_start", lambda r: _qa(r)["answers"][0].update(answer_start="3")),
        ("no data list", lambda r: r.pop("data")),
    ]
]
MODEL_CASES: list[Case] = [
    (f"model: {name}", lambda b, n=name, c=change: evaluate(b, model=model_with(b, n, c)))
    for name, change in [
        ("no tokenizer files", _no_tokenizer),
        ("empty model.safetensors", lambda f: _cut(f / "model.safetensors", 0)),
        ("truncated model.safetensors header", lambda f: _cut(f / "model.safetensors", 5000)),
        ("truncated model.safetensors tail", lambda f: _cut(f / "model.safetensors", -100)),
        ("model.safetensors not safetensors", lambda f: (f / "model.safetensors").write_bytes(b"x" * 300)),
        ("no weights", lambda f: (f / "model.safetensors").unlink()),
        ("config.json cut short", lambda f: (f / "config.json").write_text('{"model_type": "bert",')),
        ("config.json not UTF-8", lambda f: (f / "config.json").write_bytes(b'\xff\xfe{"a": 1}')),
        ("config.json a list", lambda f: (f / "config.json").write_text("[1]")),
        ("tokenizer larger than the embeddings", _small_vocabulary),
    ]
] + [("model: folder missing", lambda b: evaluate(b, model=str(b / "nowhere")))]
CONFIG_CASES: list[Case] = [
    (f"config: {text}", lambda b, t=text: evaluate(b, "--config", t))
    for text in ["inf,1,1,1", "1e400,200,100,50", "nan,1,1,1", "ratios:1,0.5,0.9,0.1", "ratios:1,abc", "ratios:1,1,1"]
] + [
    (f"config file: {name}", lambda b, n=name, blob=blob: evaluate(b, "--config", _config_file(b, n, blob)))
    for name, blob in [
        ('"significance": [1]', b'{"kind": "ratios", "values": [1, 1, 1, 1], "significance": [1]}'),
        ('"keep_question": "yes"', b'{"kind": "ratios", "values": [1, 1, 1, 1], "keep_question": "yes"}'),
        ("not UTF-8", b'\xff\xfe{"kind": "ratios", "values": [1, 1, 1, 1]}'),
        ("cut short", b'{"kind": "ratios", "values": [1, '),
        ("Infinity", b'{"kind": "ratios", "values": [1, Infinity, 1, 1]}'),
    ]
]
OPTION_CASES: list[Case] = [
    (f"option: {' '.join(argv)}", lambda b, a=argv: evaluate(b, *a) if a[0].startswith("--") else list(a))
    for argv in [
        ("--limit", "abc"), ("--precision-of-nothing", "1"), ("--latency-repeats", "0"),
        ("--limit", "-5"), ("--latency-sample", "0"), ("finetune", "--lr", "-1"), ("finetune", "--max-steps", "-3"),
        ("finetune", "--epochs", "0"), ("lengthdrop", "--max-steps", "-3"), ("search", "--trials", "0"),
        ("search", "--heartbeat", "0"), ("answer", "--top-k", "0"),
    ]
]  # fmt: skip
STORAGE_CASES: list[Case] = [
    (f"storage: {url}", lambda b, u=url: search(b, "--storage", u))
    for url in [
        "sqlite:////proc/study.db", "sqlite:////proc/no/study.db", "postgresql://u:pw@127.0.0.1:notaport/db",
        "postgres://u:pw@127.0.0.1/db", "foo://u:pw@host/db", "postgresql+psycopg://u:pw@127.0.0.1:1/db",
    ]
]  # fmt: skip
RUN_CASES: list[Case] = [
    ("run: truncated run.json (report)", lambda b: ["report", "--run", _run_copy(b, "r1", "run.json"), "--out", str(b / "r")]),
    ("run: truncated trials.json (report)", lambda b: ["report", "--run", _run_copy(b, "r2", "trials.json"), "--out", str(b / "r")]),
    ("run: truncated run.json (choose)", lambda b: ["choose", "--run", _run_copy(b, "c1", "run.json")]),
    ("run: truncated trials.json (choose)", lambda b: ["choose", "--run", _run_copy(b, "c2", "trials.json")]),
    ("run: no run folder (report)", lambda b: ["report", "--run", str(b / "no-run")]),
]  # fmt: skip
OUT_CASES: list[Case] = [("out: --out under a file", lambda b: evaluate(b, "--out", str(b / "squad.json" / "out")))]
CASES = SQUAD_CASES + MODEL_CASES + CONFIG_CASES + OPTION_CASES + STORAGE_CASES + RUN_CASES + OUT_CASES


# --- running and sorting --------------------------------------------------------------------
def outcome(argv: list[str]) -> tuple[str, str]:
    """(clean | traceback | accepted | other, the message or the exception's last line)."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code
    except Exception:  # noqa: BLE001 - an escaping exception is what this script counts
        return "traceback", traceback.format_exc().strip().splitlines()[-1][:110]
    lines = [line for line in err.getvalue().splitlines() if line.strip()]
    if code == 0:
        return "accepted", "exit 0"
    if code == 2 and len(lines) == 1 and lines[0].startswith("error:"):
        return "clean", lines[0][:110]
    return "other", f"exit {code}, {len(lines)} stderr lines: {(lines or [''])[-1][:80]}"


def prepare(base: Path) -> None:
    """The sound material every input damages one way: a tiny model, the fixture data, a finished run."""
    save_tiny_model(base / "model")
    (base / "squad.json").write_text(json.dumps(squad_dict()))
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        code = main(search(base, run="run"))
    if code != 0:
        raise SystemExit("the sound search did not finish; fix that before auditing bad inputs")


def main_() -> int:
    from dynlen.bench.model_io import quiet_libraries

    quiet_libraries()
    with tempfile.TemporaryDirectory(prefix="dynlen-bad-inputs-") as tmp:
        base = Path(tmp)
        os.environ["DYNLEN_CACHE"] = str(base / "cache")
        prepare(base)
        results = [(name, *outcome(build(base))) for name, build in CASES]
    print("| input | outcome | message |\n|---|---|---|")
    for name, kind, message in results:
        print(f"| {name} | {kind} | {message.replace('|', '/')} |")
    counts = Counter(kind for _, kind, _ in results)
    print(
        f"\n{len(results)} inputs tried: {counts['clean']} clean, {counts['traceback']} tracebacks, "
        f"{counts['accepted']} accepted, {counts['other']} other"
    )
    return 0 if counts["clean"] == len(results) else 1


if __name__ == "__main__":
    sys.exit(main_())
