"""The native small-GEMM kernel and the inference projections that use it.

Where the machine can build the kernel (AVX-512, a C++ compiler, ninja) it must build: a silent
fallback would hide a broken build. Elsewhere the kernel tests skip and the engine tests still run
the torch-GEMM path.
"""

import os

import pytest
import torch
import torch.nn.functional as F
from fixtures import tiny_bert_config

from dynlen.engine.adaptive import LengthAdaptiveQA
from dynlen.engine.config import LengthConfig
from dynlen.engine.families.projections import Projections
from dynlen.engine.kernels import native_kernels, unavailable_reason


@pytest.fixture(scope="module")
def kernel():
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(f"small-GEMM kernel not usable here: {reason}")
    module = native_kernels()
    assert module is not None, "the machine supports the kernel but it did not build (see the note on stderr)"
    return module


@pytest.mark.parametrize("rows", [1, 5, 12, 13, 40])
@pytest.mark.parametrize("k,n", [(7, 32), (64, 40), (48, 96), (33, 3)])
def test_packed_linear_equals_torch_linear(kernel, rows, k, n):
    g = torch.Generator().manual_seed(rows * 100 + k + n)
    x, w, b = torch.randn(rows, k, generator=g), torch.randn(n, k, generator=g), torch.randn(n, generator=g)
    panels, bias = kernel.pack_weight(w, b)
    assert panels.shape == ((n + 31) // 32, k, 32)
    out = kernel.packed_linear(x, panels, bias)[:, :n]
    torch.testing.assert_close(out, F.linear(x, w, b), rtol=1e-5, atol=1e-5)


def test_kernel_follows_torch_thread_count(kernel):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert kernel.parallel_width(64) == 2, "built without OpenMP: the kernel would run on one thread"
        torch.set_num_threads(1)
        assert kernel.parallel_width(64) == 1
    finally:
        torch.set_num_threads(before)


def test_switch_turns_kernel_off(monkeypatch):
    monkeypatch.setenv("DYNLEN_KERNELS", "off")
    assert "DYNLEN_KERNELS" in unavailable_reason()


def test_projections_fuse_and_follow_weight_changes():
    torch.manual_seed(0)
    q, k, v = (torch.nn.Linear(8, 6) for _ in range(3))
    project = Projections()
    x = torch.randn(2, 5, 8)
    with torch.no_grad():
        got = project(x, q, k, v)
        for lin, out in zip((q, k, v), got):
            torch.testing.assert_close(out, lin(x), rtol=1e-5, atol=1e-5)
        k.weight.mul_(3)  # an optimiser step or load_state_dict changes weights in place
        torch.testing.assert_close(project(x, q, k, v)[1], k(x), rtol=1e-5, atol=1e-5)
        v.weight = torch.nn.Parameter(torch.randn(6, 8))  # a parameter replaced outright
        torch.testing.assert_close(project(x, q, k, v)[2], v(x), rtol=1e-5, atol=1e-5)
        q.load_state_dict({"weight": torch.randn(6, 8), "bias": torch.randn(6)})
        torch.testing.assert_close(project(x, q, k, v)[0], q(x), rtol=1e-5, atol=1e-5)
    grads = project(x, q)[0]
    assert grads.requires_grad and grads.grad_fn is not None  # with gradients on, the stock module runs
    with torch.no_grad():
        for lin in (q, k, v):
            lin.double()  # a cast gives new storage
        torch.testing.assert_close(project(x.double(), q, k, v)[1], k(x.double()), rtol=1e-9, atol=1e-9)


def test_engine_same_logits_with_and_without_kernel_on_unaligned_widths():
    """Hidden 40 and FFN 72 are not multiples of the kernel's 32-column panels: the padded path."""
    from transformers import BertForQuestionAnswering

    torch.manual_seed(0)
    model = BertForQuestionAnswering._from_config(tiny_bert_config(hidden=40, heads=4, ffn=72)).eval()
    ids = torch.randint(5, 60, (2, 19), generator=torch.Generator().manual_seed(3))
    mask = torch.ones_like(ids)
    mask[1, 11:] = 0
    config = LengthConfig.parse("ratios:1,0.6,0.4,0.3")
    with torch.no_grad():
        fast = LengthAdaptiveQA(model)(ids, mask, None, config)
        plain = LengthAdaptiveQA(model, kernels=False)(ids, mask, None, config)
        stock = model(input_ids=ids, attention_mask=mask)
        keep_all = LengthAdaptiveQA(model)(ids, mask, None)
    real = mask.bool()
    torch.testing.assert_close(fast.start_logits[real], plain.start_logits[real], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.end_logits[real], plain.end_logits[real], rtol=1e-5, atol=1e-5)
    assert (keep_all.start_logits - stock.start_logits)[real].abs().max() <= 1e-5


def _reference_drop(q, k, v, lengths, keep, scale):
    """The engine's semantics written plainly, one example at a time."""
    batch, heads, _, head_dim = q.shape
    width = int(keep.max())
    contexts, slots = [], []
    for b in range(batch):
        n = int(lengths[b])
        probs = ((q[b, :, :n] * scale) @ k[b, :, :n].transpose(-1, -2)).softmax(-1)
        significance = probs.sum(dim=(0, 1))
        significance[0] = float("inf")  # [CLS] stays
        kept = significance.topk(int(keep[b])).indices.sort().values
        row = torch.zeros(width, dtype=torch.long)
        row[: len(kept)] = kept  # fillers read slot 0
        contexts.append((probs[:, row] @ v[b, :, :n]).transpose(0, 1).reshape(width, heads * head_dim))
        slots.append(row)
    return torch.stack(contexts), torch.stack(slots)


@pytest.mark.parametrize(
    "batch,heads,n,head_dim", [(1, 12, 150, 32), (3, 4, 37, 8), (2, 2, 20, 80), (1, 3, 1, 16), (2, 12, 70, 64)]
)
def test_drop_attention_equals_reference(kernel, batch, heads, n, head_dim):
    g = torch.Generator().manual_seed(batch * 1000 + n + head_dim)
    qkv = torch.randn(batch, n, 3 * heads * head_dim, generator=g)  # the fused projection's layout
    q, k, v = (t.view(batch, n, heads, head_dim).transpose(1, 2) for t in qkv.split(heads * head_dim, dim=-1))
    lengths = torch.tensor([max(1, n - 5 * b) for b in range(batch)])
    keep = torch.tensor([max(1, int(length * (0.7 - 0.2 * b))) for b, length in enumerate(lengths.tolist())])
    context, slots = kernel.drop_attention(q, k, v, lengths.tolist(), keep.tolist(), [1] * batch, head_dim**-0.5)
    want_context, want_slots = _reference_drop(q, k, v, lengths, keep, head_dim**-0.5)
    assert torch.equal(slots, want_slots)
    torch.testing.assert_close(context, want_context, rtol=1e-5, atol=2e-6)


def test_drop_attention_keeps_protected_leading_slots(kernel):
    """The question segment leads every row: its slots stay whatever attention they receive."""
    g = torch.Generator().manual_seed(3)
    q, k, v = (torch.randn(2, 4, 30, 16, generator=g) for _ in range(3))
    lengths, keep, protect = torch.tensor([30, 24]), torch.tensor([12, 8]), torch.tensor([9, 3])
    _, slots = kernel.drop_attention(q, k, v, lengths.tolist(), keep.tolist(), protect.tolist(), 0.25)
    _, free = kernel.drop_attention(q, k, v, lengths.tolist(), keep.tolist(), [1, 1], 0.25)
    assert slots[0, :9].tolist() == list(range(9)) and slots[1, :3].tolist() == [0, 1, 2]
    assert not torch.equal(slots, free)  # the protection changed the choice on this input
    from dynlen.engine.adaptive import _select_kept

    probs = (q * 0.25 @ k.transpose(-1, -2)).softmax(-1)
    valid = torch.arange(30)[None, :] < lengths[:, None]
    probs = (q * 0.25 @ k.transpose(-1, -2)).masked_fill(~valid[:, None, None, :], float("-inf")).softmax(-1)
    question = torch.arange(30)[None, :] < protect[:, None]
    want, _ = _select_kept(probs, valid, keep, protect=question)
    assert torch.equal(slots[0], want[0]) and torch.equal(slots[1, :8], want[1, :8])


def test_drop_attention_does_not_depend_on_thread_count(kernel):
    g = torch.Generator().manual_seed(7)
    q, k, v = (torch.randn(2, 12, 90, 32, generator=g) for _ in range(3))
    lengths, keep = [90, 61], [40, 17]
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = kernel.drop_attention(q, k, v, lengths, keep, [1, 1], 0.2)
        torch.set_num_threads(2)
        two = kernel.drop_attention(q, k, v, lengths, keep, [1, 1], 0.2)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one[0], two[0]) and torch.equal(one[1], two[1])


def test_drop_attention_rejects_keeping_more_than_the_real_tokens(kernel):
    q = torch.randn(1, 2, 6, 8)
    with pytest.raises(RuntimeError, match="keep <= length"):
        kernel.drop_attention(q, q, q, [4], [5], [1], 1.0)


def _spy_on(kernel, name: str, monkeypatch) -> list:
    """Route the engine's kernels module through a stand-in whose ``name`` counts its calls."""
    calls = []
    original = getattr(kernel, name)
    spy = type("Spy", (), {name: staticmethod(lambda *a: calls.append(1) or original(*a))})()
    monkeypatch.setattr("dynlen.engine.adaptive.native_kernels", lambda: spy)
    return calls


def _tiny_qa(seed: int):
    from transformers import BertForQuestionAnswering

    torch.manual_seed(seed)
    return BertForQuestionAnswering._from_config(tiny_bert_config(hidden=48, heads=4, ffn=96)).eval()


@pytest.mark.parametrize("left_padding", [False, True])
def test_engine_native_drop_matches_torch_path(kernel, monkeypatch, left_padding):
    """Right padding runs the native drop attention; left padding (real tokens not a prefix) must not."""
    calls = _spy_on(kernel, "drop_attention", monkeypatch)
    model = _tiny_qa(seed=1)
    ids = torch.randint(5, 60, (3, 23), generator=torch.Generator().manual_seed(5))
    mask = torch.ones_like(ids)
    if left_padding:
        mask[1, :9] = 0
    else:
        mask[1, 14:] = 0
    config = LengthConfig.parse("ratios:0.9,0.6,0.4,0.3")
    with torch.no_grad():
        fast = LengthAdaptiveQA(model)(ids, mask, None, config)
        plain = LengthAdaptiveQA(model, kernels=False)(ids, mask, None, config)
    assert (len(calls) > 0) != left_padding
    real = mask.bool()
    assert torch.equal(fast.kept, plain.kept)
    torch.testing.assert_close(fast.start_logits[real], plain.start_logits[real], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(fast.end_logits[real], plain.end_logits[real], rtol=1e-4, atol=1e-5)


def _reference_probe_select(hidden, weight, bias, lengths, keep, protect):
    """The torch path's choice: softmax(start) + softmax(end) over real slots, leading slots protected."""
    slots = torch.zeros(hidden.shape[0], int(keep.max()), dtype=torch.long)
    for b in range(hidden.shape[0]):
        n, k = int(lengths[b]), int(keep[b])
        logits = F.linear(F.gelu(hidden[b, :n]), weight, bias)
        significance = logits.softmax(dim=0).sum(dim=-1)
        significance[: max(1, min(int(protect[b]), k))] = float("inf")
        slots[b, :k] = significance.topk(k).indices.sort().values
    return slots


@pytest.mark.parametrize("batch,n,width", [(1, 150, 64), (3, 37, 8), (2, 20, 70), (1, 1, 16)])
def test_probe_select_equals_the_torch_selection(kernel, batch, n, width):
    g = torch.Generator().manual_seed(batch * 100 + n + width)
    fused = torch.randn(batch, n, 3 * width + 5, generator=g)  # the probe's columns sit inside a wider GEMM output
    hidden = fused[..., 2 * width : 3 * width]
    weight, bias = torch.randn(2, width, generator=g) / width**0.5, torch.randn(2, generator=g)
    lengths = torch.tensor([max(1, n - 6 * b) for b in range(batch)])
    keep = torch.tensor([max(1, int(length * (0.6 - 0.15 * b))) for b, length in enumerate(lengths.tolist())])
    protect = torch.tensor([4, 0, 30][:batch])  # a question, none, one longer than some rows keep
    slots = kernel.probe_select(hidden, weight, bias, lengths.tolist(), keep.tolist(), protect.tolist())
    assert torch.equal(slots, _reference_probe_select(hidden, weight, bias, lengths, keep, protect))


def test_probe_select_rejects_a_probe_of_another_width(kernel):
    with pytest.raises(RuntimeError, match="width"):
        kernel.probe_select(torch.randn(1, 9, 8), torch.randn(2, 6), torch.randn(2), [9], [4], [1])


@pytest.mark.parametrize("question", [False, True])
def test_engine_probe_select_matches_torch_path(kernel, monkeypatch, question):
    """At inference the look-ahead policy's selection runs in the kernel and chooses what torch's ops choose."""
    from dynlen.engine.probes import LookaheadProbes

    calls = _spy_on(kernel, "probe_select", monkeypatch)
    model = _tiny_qa(seed=2)
    probes = LookaheadProbes(48, [1, 2, 3], 16).eval()
    for parameter in probes.parameters():
        torch.nn.init.normal_(parameter, std=0.5)
    ids = torch.randint(5, 60, (3, 23), generator=torch.Generator().manual_seed(7))
    ids[:, 0], ids[:, 6] = 2, 3  # [CLS], a question of five tokens, [SEP]
    mask = torch.ones_like(ids)
    mask[1, 14:] = 0
    config = LengthConfig.parse(f"ratios:1,0.6,0.4,0.3@lookahead{'+question' if question else ''}")
    kept = {}
    with torch.no_grad():
        for name, kernels in (("fast", True), ("plain", False)):
            qa = LengthAdaptiveQA(model, kernels=kernels, probes=probes, sep_token_id=3)
            kept[name] = qa(ids, mask, None, config, trace=True)
    assert len(calls) == 3
    fast, plain = kept["fast"], kept["plain"]
    for (_, a, real_a), (_, b, real_b) in zip(fast.trace, plain.trace):  # fillers of a short row may differ
        assert torch.equal(real_a, real_b) if real_a is not None else real_b is None
        assert torch.equal(a if real_a is None else a[real_a], b if real_b is None else b[real_b])
    real = mask.bool()
    torch.testing.assert_close(fast.start_logits[real], plain.start_logits[real], rtol=1e-4, atol=1e-5)


def test_compiling_is_told_apart_from_loading_a_built_module(tmp_path, monkeypatch):
    import dynlen.engine.kernels as kernels

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert kernels.needs_compiling(), "an empty extension cache means a compile"
    built = tmp_path / kernels.NAME / f"{kernels.NAME}.so"
    built.parent.mkdir(parents=True, exist_ok=True)
    built.write_bytes(b"")
    newest = max(path.stat().st_mtime for path in kernels.SOURCES)
    os.utime(built, (newest + 10, newest + 10))
    assert not kernels.needs_compiling()
    os.utime(built, (newest - 10, newest - 10))
    assert kernels.needs_compiling(), "a module older than a source is rebuilt"


def test_a_build_killed_midway_does_not_block_the_next_run(tmp_path):
    """torch waits forever on the lock file a killed build leaves; the build lock clears it, one holder at a time."""
    import fcntl

    from dynlen.engine.kernels import build_lock

    (tmp_path / "lock").write_text("")  # what a build killed midway leaves behind
    with build_lock(tmp_path):
        assert not (tmp_path / "lock").exists()
        with open(tmp_path / "dynlen-build.lock") as other:  # another process's try: the lock is held
            with pytest.raises(BlockingIOError):
                fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)
    with open(tmp_path / "dynlen-build.lock") as other:
        fcntl.flock(other, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released once the build is done


def test_elapsed_bar_names_the_step_on_stderr(capsys):
    from dynlen.engine.kernels import elapsed_bar

    with elapsed_bar("compiling something"):
        pass
    assert "compiling something" in capsys.readouterr().err
