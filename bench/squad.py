"""SQuAD 1.1 examples: reading the official nested JSON, the hub copy, and article splits.

The evaluator works on flat examples (one question each) but splits must be made
per article, so that a search split and a held-out split never share a context.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

from dynlen.errors import UserError

# Where these machines keep the official SQuAD 1.1 dev set: the default --data of every command.
DEFAULT_DEV_SET = "../shared/data/squad/dev-v1.1.json"
# The published checksums of the official files: a file under one of these names that differs
# (truncated, edited, a different release) would silently move every figure, so it is refused.
OFFICIAL_MD5 = {
    "dev-v1.1.json": "3e85deb501d4e538b6bc56f786231552",
    "train-v1.1.json": "981b29407e0affa3b1b156f72073b945",
}
SQUAD_SITE = "https://rajpurkar.github.io/SQuAD-explorer/"


@dataclass(frozen=True)
class Example:
    """One SQuAD question with its context and gold answers."""

    qid: str
    title: str
    context: str
    question: str
    answers: tuple[str, ...]
    answer_starts: tuple[int, ...]


@dataclass(frozen=True)
class SquadData:
    """The examples of one SQuAD file plus an identity used for feature caching."""

    examples: list[Example]
    source: str
    fingerprint: str

    @property
    def titles(self) -> list[str]:
        seen: dict[str, None] = {}
        for ex in self.examples:
            seen.setdefault(ex.title, None)
        return list(seen)


LAYOUT = (
    "each article needs 'title' and 'paragraphs', each paragraph 'context' and 'qas', "
    "each qa 'id', 'question' and 'answers' (a list of {'text', 'answer_start'})"
)


def _field(holder: object, key: str, kind: type | tuple[type, ...], where: str, source: str) -> object:
    """``holder[key]`` if it has the JSON type the official layout gives it; else one line saying where."""
    if not isinstance(holder, dict):
        raise UserError(
            f"{source} is a malformed SQuAD file: {where} is {type(holder).__name__}, not an object; {LAYOUT}"
        )
    if key not in holder:
        raise UserError(f"{source} is a malformed SQuAD file: {where} has no {key!r}; {LAYOUT}")
    value = holder[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        want = {"str": "a string", "list": "a list", "int": "an integer"}
        shown = " or ".join(want.get(n, n) for n in names.split(" or "))
        raise UserError(
            f"{source} is a malformed SQuAD file: {where} {key!r} is {value!r:.60}, not {shown}; fix that field"
        )
    return value


def _parse_nested(raw: object, source: str) -> list[Example]:
    """Flat examples from the official nested layout, every field checked for its JSON type.

    A wrong field (a null context, a numeric question, a textual answer_start) is named with the
    article and question it sits in, here, before a model is loaded, rather than failing inside
    the tokenizer or the scorer after a whole search.
    """
    if not isinstance(raw, dict) or not isinstance(raw.get("data"), list):
        raise UserError(
            f"{source} is not a SQuAD 1.1 file: expected a JSON object with a 'data' list "
            '(the official layout {"version", "data": [{"title", "paragraphs": ...}]})'
        )
    if str(raw.get("version", "")).lstrip("v").startswith("2"):
        raise UserError(_squad_v2(source, None))
    examples: list[Example] = []
    for a, article in enumerate(raw["data"]):
        title = _field(article, "title", str, f"article {a}", source)
        for p, para in enumerate(_field(article, "paragraphs", list, f"article {a} ({title!r:.40})", source)):
            where = f"article {a} paragraph {p}"
            context = _field(para, "context", str, where, source)
            for q, qa in enumerate(_field(para, "qas", list, where, source)):
                qid = _field(qa, "id", (str, int), f"{where} qa {q}", source)
                where_q = f"question {qid!r}"
                question = _field(qa, "question", str, where_q, source)
                if qa.get("is_impossible") is not None or "plausible_answers" in qa:
                    raise UserError(_squad_v2(source, qid))
                answers = _field(qa, "answers", list, where_q, source)
                texts, starts = [], []
                for n, answer in enumerate(answers):
                    text = _field(answer, "text", str, f"{where_q} answer {n}", source)
                    start = _field(answer, "answer_start", int, f"{where_q} answer {n}", source)
                    if not 0 <= start <= len(context):
                        raise UserError(
                            f"{source} is a malformed SQuAD file: {where_q} answer {n} starts at {start}, outside its context "
                            f"(0..{len(context)}); fix answer_start"
                        )
                    texts.append(text)
                    starts.append(start)
                examples.append(Example(str(qid), title, context, question, tuple(texts), tuple(starts)))
    if not examples:
        raise UserError(f"{source} holds no questions; point DATA at a SQuAD 1.1 JSON file with questions")
    check_examples(examples, source)
    return examples


def _squad_v2(source: str, qid: object) -> str:
    where = f" (question {qid!r} has 'is_impossible')" if qid is not None else ""
    return (
        f"{source} is a SQuAD 2.0 file{where}: unanswerable questions would be scored as wrong answers; "
        "give a SQuAD 1.1 file"
    )


def _example_problem(ex: Example) -> str | None:
    """What makes one question unscorable, or None: each of these would silently move F1 and EM."""
    if not ex.question.strip():
        return "has an empty question"
    if not ex.answers:
        return "has no gold answer (every prediction would score 0)"
    for n, (text, start) in enumerate(zip(ex.answers, ex.answer_starts)):
        if not text.strip():
            return f"answer {n} has an empty text"
        if ex.context[start : start + len(text)] != text:
            found = ex.context[start : start + len(text)]
            return f"answer {n} {text!r:.40} is not at answer_start {start} (the context has {found!r:.40} there)"
    return None


def check_examples(examples: list[Example], source: str) -> None:
    """One line naming the first question the scorer cannot score as written, before a model is loaded.

    Questions without answers would count as 0, duplicate ids collapse in the scorer (n questions
    reported, fewer scored), and an answer away from its answer_start trains on the wrong span.
    """
    seen: set[str] = set()
    for ex in examples:
        if ex.qid in seen:
            raise UserError(
                f"{source} is a malformed SQuAD file: question id {ex.qid!r} occurs twice (the scorer would "
                "keep only one); give every question its own id"
            )
        seen.add(ex.qid)
        problem = _example_problem(ex)
        if problem is not None:
            raise UserError(f"{source} is a malformed SQuAD file: question {ex.qid!r} {problem}; fix that question")


def load_squad_file(path: str | Path) -> SquadData:
    """Read an official SQuAD 1.1 JSON file."""
    path = Path(path)
    if not path.is_file():
        raise UserError(
            f"SQuAD file not found: {path}. Pass DATA=/path/to/dev-v1.1.json (on these machines: {DEFAULT_DEV_SET})"
        )
    blob = path.read_bytes()
    md5 = hashlib.md5(blob).hexdigest()
    official = OFFICIAL_MD5.get(path.name)
    if official is not None and md5 != official:
        raise UserError(
            f"{path} is not the official {path.name} (md5 {md5}, published {official}); "
            f"download it again from {SQUAD_SITE}, or rename an edited copy"
        )
    try:
        raw = json.loads(blob)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); give the official SQuAD 1.1 JSON file") from None
    examples = _parse_nested(raw, str(path))
    return SquadData(examples, str(path), md5)


def load_squad_hub(name: str = "rajpurkar/squad", split: str = "validation") -> SquadData:
    """Load SQuAD from the Hugging Face hub (only where the hub is reachable)."""
    try:
        import datasets

        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # noqa: BLE001 - any hub failure becomes one clear line
        raise UserError(
            f"could not load dataset {name!r} ({split}) from the hub: {type(exc).__name__}. "
            f"Offline, pass a local file instead, e.g. DATA={DEFAULT_DEV_SET}"
        ) from None
    examples = [
        Example(
            qid=str(row["id"]),
            title=row["title"],
            context=row["context"],
            question=row["question"],
            answers=tuple(row["answers"]["text"]),
            answer_starts=tuple(int(s) for s in row["answers"]["answer_start"]),
        )
        for row in ds
    ]
    check_examples(examples, f"hub:{name}:{split}")
    return SquadData(examples, f"hub:{name}:{split}", f"hub-{name}-{split}-{ds._fingerprint}")


def load_squad(source: str | Path) -> SquadData:
    """A local path, or ``hub:<name>[:<split>]`` for the hub copy."""
    text = str(source)
    if text.startswith("hub:"):
        parts = text.split(":")
        name = parts[1] if len(parts) > 1 and parts[1] else "rajpurkar/squad"
        split = parts[2] if len(parts) > 2 else "validation"
        return load_squad_hub(name, split)
    return load_squad_file(text)


def first_articles(data: SquadData, articles: int | None) -> SquadData:
    """The questions of the first ``articles`` articles, in file order (a smoke model's training data)."""
    if articles is None or articles >= len(data.titles):
        return data
    keep = set(data.titles[:articles])
    return SquadData(
        [ex for ex in data.examples if ex.title in keep], data.source, f"{data.fingerprint}-articles{articles}"
    )


def limit_examples(data: SquadData, limit: int | None) -> SquadData:
    """The first ``limit`` questions, in file order (what the published numbers' subsets use)."""
    if limit is None or limit <= 0 or limit >= len(data.examples):
        return data
    return SquadData(data.examples[:limit], data.source, f"{data.fingerprint}-first{limit}")


def split_by_article(data: SquadData, held_out_fraction: float = 0.5, seed: int = 0) -> tuple[SquadData, SquadData]:
    """(search split, held-out split): whole articles go to one side only.

    Articles are shuffled with a fixed seed, then assigned greedily so that the held-out
    side gets about ``held_out_fraction`` of the questions.
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise UserError(f"held-out fraction must be between 0 and 1, got {held_out_fraction}")
    titles = data.titles
    if len(titles) < 2:
        raise UserError(f"{data.source} has {len(titles)} article(s); an article-level split needs at least 2")
    rng = random.Random(seed)
    order = titles[:]
    rng.shuffle(order)
    counts: dict[str, int] = {}
    for ex in data.examples:
        counts[ex.title] = counts.get(ex.title, 0) + 1
    target = held_out_fraction * len(data.examples)
    held: set[str] = set()
    total = 0
    for title in order:
        if total >= target or len(held) == len(titles) - 1:
            break
        held.add(title)
        total += counts[title]
    search_ex = [ex for ex in data.examples if ex.title not in held]
    held_ex = [ex for ex in data.examples if ex.title in held]
    tag = f"split{seed}-{held_out_fraction}"
    return (
        SquadData(search_ex, f"{data.source}[search]", f"{data.fingerprint}-{tag}-search"),
        SquadData(held_ex, f"{data.source}[held-out]", f"{data.fingerprint}-{tag}-heldout"),
    )
