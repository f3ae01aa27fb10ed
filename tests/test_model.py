"""Model assembly (backend/nn/model.py, backend/build.py): blocks, sharing, heads, caches, init."""
from __future__ import annotations

import json
import math
import subprocess
import sys

from pathlib import Path

import pytest
import torch
from torch import nn

from backend.build import build_model, model_config
from backend.nn.common import REGISTRY
from backend.nn.model import ModelCache, Transformer
from backend.registry import CROSS, REGISTRIES

import backend.nn.mlp  # noqa: F401  (registers)
import backend.nn.moe  # noqa: F401
import backend.nn.norms  # noqa: F401
import backend.nn.positional  # noqa: F401


ROOT = Path(__file__).resolve().parent.parent


def _loads(info) -> bool:
    info.load()  # every registered kind must import; an error here fails the run
    return True


HAVE_SDPA = _loads(REGISTRIES["attention"]["self_sdpa"]) and _loads(CROSS)
needs_sdpa = pytest.mark.skipif(not HAVE_SDPA, reason="backend.nn.attention (self_sdpa, cross) not written yet")
CAUSAL_KINDS = [n for n, k in REGISTRIES["attention"].items() if k.causal and _loads(k)]


def design(**over):
    base = {
        "name": "t", "architecture": "decoder", "task": "lm", "vocab_size": 61, "hidden_size": 32, "n_heads": 4,
        "max_seq_len": 64, "tie_embeddings": False,
        "layers": {"n_layers": 2, "attention": "self_sdpa", "mlp": "swiglu"},
    }
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return base


def encdec(**over):
    d = design(**{"architecture": "encoder_decoder", "task": "seq2seq", **over})
    stack = d.pop("layers")
    d.setdefault("encoder", dict(stack))
    d.setdefault("decoder", dict(stack))
    return d


# ---------------------------------------------------------------------------
# Config and build


def test_model_config_is_plain_json_with_kind_names():
    cfg = model_config(design(layers={"n_layers": 2, "mlp": "geglu", "repeat": {"mode": "cycle", "factor": 3}}))
    assert json.loads(json.dumps(cfg)) == cfg
    st = cfg["stacks"]["layers"]
    assert st["order"] == [0, 1, 0, 1, 0, 1] and st["causal"] is True and st["cross"] is False
    assert st["layers"][0]["config"]["mlp"]["kind"] == "geglu"
    assert st["layers"][0]["config"]["attention"]["kind"] == "self_sdpa"
    assert cfg["n_kv_heads"] == 4 and cfg["head_dim"] == 8 and cfg["ffn_hidden"] == 128


def test_registry_paths_point_to_real_classes():
    for cat in ("mlp", "norm", "positional"):
        for name, info in REGISTRIES[cat].items():
            cls = info.load()
            assert REGISTRY[cat][name] is cls, (cat, name)
    missing = [n for n, k in REGISTRIES["attention"].items() if not _loads(k)]
    if missing:
        pytest.fail(f"attention kinds not written yet: {missing}")
    for name, info in REGISTRIES["attention"].items():
        assert REGISTRY["attention"][name] is info.load()
    assert REGISTRY["cross"]["cross"] is CROSS.load()


@needs_sdpa
def test_meta_build_allocates_nothing_and_skips_dynamo():
    code = (
        "import sys, time; t = time.time()\n"
        "from backend.build import build_model\n"
        "m = build_model('llama2_7b', device='meta')\n"
        "n = sum(p.numel() for p in m.parameters())\n"
        "assert all(p.is_meta for p in m.parameters())\n"
        "print(n, 'torch._dynamo' in sys.modules, round(time.time() - t, 2))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=str(ROOT))
    assert out.returncode == 0, out.stderr
    n, dynamo, _secs = out.stdout.split()
    assert int(n) == 6_738_415_616
    assert dynamo == "False", "building on meta imported torch._dynamo (an init function ran on meta)"


@needs_sdpa
def test_real_build_init_scheme():
    d = design(bias=True, norm="layer", layers={"n_layers": 3, "mlp": "mlp"}, init_std=0.05, vocab_size=4000, hidden_size=64, mlp_hidden=1024)
    torch.manual_seed(0)
    m = build_model(d)
    depth = 3
    blk = m.stacks["layers"].blocks[0]
    assert abs(blk.mlp.fc1.weight.std().item() - 0.05) < 0.005
    assert abs(blk.mlp.fc2.weight.std().item() - 0.05 / math.sqrt(2 * depth)) < 0.003
    assert torch.all(blk.mlp.fc1.bias == 0)
    assert torch.all(blk.attn_norm.weight == 1) and torch.all(blk.attn_norm.bias == 0)
    assert abs(m.embed.weight.std().item() - 0.05) < 0.005


# ---------------------------------------------------------------------------
# Weight sharing


@needs_sdpa
def test_cycle_sharing_two_unique_layers_execute_sixteen_times():
    shared = build_model(design(layers={"n_layers": 2, "repeat": {"mode": "cycle", "factor": 8}}))
    plain = build_model(design(layers={"n_layers": 2}))
    assert sum(p.numel() for p in shared.parameters()) == sum(p.numel() for p in plain.parameters())
    st = shared.stacks["layers"]
    assert len(st.blocks) == 2 and st.order == [0, 1] * 8
    calls = []
    for u, blk in enumerate(st.blocks):
        blk.register_forward_hook(lambda mod, args, out, u=u: calls.append(u))
    shared(torch.randint(0, 61, (2, 5)))
    assert calls == [0, 1] * 8
    # layerwise: l1 l1 l2 l2 ...
    lw = build_model(design(layers={"n_layers": 2, "repeat": {"mode": "layerwise", "factor": 3}}))
    assert lw.stacks["layers"].order == [0, 0, 0, 1, 1, 1]


@needs_sdpa
def test_shared_layers_get_their_own_caches():
    m = build_model(design(layers={"n_layers": 1, "repeat": {"mode": "cycle", "factor": 3}})).double().eval()
    cache = m.new_cache(1, 16)
    assert len(cache.layers) == 3
    assert len({id(e["self"]) for e in cache.layers}) == 3


# ---------------------------------------------------------------------------
# Heads


TASKS = [
    ("decoder", "lm", {}, lambda b, s, d: (b, s, 61)),
    ("encoder", "mlm", {}, lambda b, s, d: (b, s, 61)),
    ("decoder", "regression", {"output_dim": 3}, lambda b, s, d: (b, 3)),
    ("encoder", "classification", {"output_dim": 5}, lambda b, s, d: (b, 5)),
    ("encoder", "sequence", {"output_dim": 2}, lambda b, s, d: (b, s, 2)),
    ("decoder", "cluster_assignments", {"output_dim": 4}, lambda b, s, d: (b, s, 4)),
    ("encoder", "cluster_centers", {"output_dim": 4, "input_dim": 3, "vocab_size": None}, lambda b, s, d: (b, 4, 3)),
    ("encoder", "regression", {"output_dim": 1, "input_dim": 6, "vocab_size": None}, lambda b, s, d: (b, 1)),
]


@needs_sdpa
@pytest.mark.parametrize("arch,task,extra,shape", TASKS, ids=[f"{a}-{t}" for a, t, *_ in TASKS])
def test_head_shapes(arch, task, extra, shape):
    m = build_model(design(architecture=arch, task=task, **extra))
    b, s = 2, 7
    x = torch.randn(b, s, extra["input_dim"]) if extra.get("vocab_size", 1) is None else torch.randint(0, 61, (b, s))
    mask = torch.ones(b, s, dtype=torch.bool)
    mask[1, 5:] = False
    out = m(x, mask=mask)
    assert out.output.shape == shape(b, s, 32)
    assert out.aux_loss.dim() == 0 and torch.isfinite(out.output).all()


@needs_sdpa
@pytest.mark.parametrize("task,extra,shape", [("seq2seq", {}, (2, 4, 61)), ("classification", {"output_dim": 3}, (2, 3)),
                                              ("sequence", {"output_dim": 2}, (2, 4, 2))])
def test_encoder_decoder_heads(task, extra, shape):
    m = build_model(encdec(task=task, **extra))
    out = m(torch.randint(0, 61, (2, 6)), torch.randint(0, 61, (2, 4)))
    assert out.output.shape == shape


@needs_sdpa
def test_pooling_ignores_padding():
    m = build_model(design(architecture="encoder", task="regression", output_dim=1)).eval()
    x = torch.randint(0, 61, (1, 6))
    mask = torch.tensor([[True] * 4 + [False] * 2])
    a = m(x, mask=mask).output
    x2 = x.clone()
    x2[0, 4:] = (x2[0, 4:] + 7) % 61
    assert torch.allclose(a, m(x2, mask=mask).output, atol=1e-6)


def test_tied_embeddings_share_one_tensor():
    if not HAVE_SDPA:
        pytest.fail("needs self_sdpa")
    m = build_model(design(tie_embeddings=True), device="meta")
    assert m.head.weight is m.embed.weight
    untied = build_model(design(tie_embeddings=False), device="meta")
    n_tied = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for p in untied.parameters()) == n_tied + 61 * 32


# ---------------------------------------------------------------------------
# Norms, placements, flow: forward/backward, every parameter gets a gradient


def _check_grads(m: Transformer, *args, **kw):
    out = m(*args, **kw)
    loss = out.output.float().pow(2).mean() + out.aux_loss
    loss.backward()
    assert torch.isfinite(out.output).all()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, missing
    zero = [n for n, p in m.named_parameters() if p.grad.abs().sum() == 0]
    return zero


@needs_sdpa
@pytest.mark.parametrize("norm", ["layer", "rms", "scale", "rezero", "adaptive"])
@pytest.mark.parametrize("placement", ["pre", "post", "pre_post"])
def test_norm_placements_train(norm, placement):
    torch.manual_seed(0)
    m = build_model(design(norm=norm, norm_placement=placement, bias=True, layers={"n_layers": 2, "mlp": "mlp"}))
    if norm == "rezero":  # alpha starts at 0: nudge it so the branches receive gradient too
        for blk in m.stacks["layers"].blocks:
            for sub in (blk.attn_norm, blk.mlp_norm):
                torch.nn.init.constant_(sub.alpha, 0.1)
    zero = _check_grads(m, torch.randint(0, 61, (2, 6)))
    assert not zero, zero


@needs_sdpa
@pytest.mark.parametrize("mode", ["none", "constant", "learned", "predicted"])
@pytest.mark.parametrize("per_layer", [False, True])
def test_flow_modes_train(mode, per_layer):
    torch.manual_seed(0)
    flow = {"mode": mode, "per_layer": per_layer, "value": 0.5, "hidden": 8}
    m = build_model(design(layers={"n_layers": 2, "repeat": {"mode": "cycle", "factor": 2}, "flow": flow}))
    zero = _check_grads(m, torch.randint(0, 61, (2, 6)))
    assert not zero, zero
    speeds = [n for n, _ in m.named_parameters() if ".flow." in n]
    if mode == "learned":
        assert m.stacks["layers"].flow.speed.shape == ((4,) if per_layer else (1,))
        assert torch.allclose(m.stacks["layers"].flow.speed, torch.tensor(0.5))
    elif mode == "predicted":
        assert len(m.stacks["layers"].flow.predictor) == (4 if per_layer else 1)
    else:
        assert speeds == []


@needs_sdpa
def test_constant_flow_scales_the_residual_update():
    d = design(layers={"n_layers": 1, "flow": {"mode": "constant", "value": 0.0}}, final_norm=False)
    m = build_model(d).eval()
    x = torch.randint(0, 61, (1, 5))
    out = m(x)  # s = 0: the block is the identity, the output is the embedding through the head
    assert torch.allclose(out.hidden, m.embed(x), atol=1e-6)


@needs_sdpa
@pytest.mark.parametrize("mlp", ["swiglu", "geglu", "reglu", "relu2", "mlp", "moe"])
def test_mlp_kinds_train_in_encoder_decoder(mlp):
    torch.manual_seed(0)
    stack = {"n_layers": 1, "mlp": mlp}
    if mlp == "moe":
        stack["params"] = {"mlp": {"num_experts": 4, "top_k": 2, "expert": "geglu"}}
    m = build_model(encdec(encoder=stack, decoder=stack, dropout=0.1))
    zero = _check_grads(m, torch.randint(0, 61, (2, 6)), torch.randint(0, 61, (2, 5)))
    assert not zero, zero


@needs_sdpa
def test_features_input_learned_positions_and_dropout():
    d = design(architecture="encoder", task="sequence", vocab_size=None, input_dim=5, output_dim=2,
               positional="learned", dropout=0.5)
    m = build_model(d)
    x = torch.randn(2, 6, 5)
    m.train()
    assert not torch.equal(m(x).output, m(x).output)
    m.eval()
    assert torch.equal(m(x).output, m(x).output)
    with pytest.raises(ValueError, match="max_seq_len"):
        m(torch.randn(1, 65, 5))


@needs_sdpa
def test_gradient_checkpointing_matches_plain():
    torch.manual_seed(0)
    d = design(layers={"n_layers": 2, "mlp": "moe", "params": {"mlp": {"num_experts": 4, "top_k": 2}}})
    a = build_model(d).double()
    b = build_model({**d, "gradient_checkpointing": True}).double()
    b.load_state_dict(a.state_dict())
    x = torch.randint(0, 61, (2, 6))
    grads = []
    for m in (a, b):
        m.train()
        out = m(x)
        (out.output.pow(2).mean() + out.aux_loss).backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters()})
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-10), n


# ---------------------------------------------------------------------------
# Incremental decoding


def _mixed_decoder(kinds):
    rules = [{"when": {"layer_idx": [i]}, "attention": k} for i, k in enumerate(kinds)]
    return design(layers={"n_layers": len(kinds), "rules": rules}, max_seq_len=32)


@needs_sdpa
def test_generate_greedy_equals_argmax_of_full_forward():
    kinds = ["self_sdpa"] + [k for k in CAUSAL_KINDS if k != "self_sdpa"]
    torch.manual_seed(0)
    m = build_model(_mixed_decoder(kinds)).double().eval()
    prompt = torch.randint(0, 61, (2, 3))
    seq = m.generate(prompt, 8)
    assert seq.shape == (2, 11) and torch.equal(seq[:, :3], prompt)
    with torch.no_grad():
        logits = m(seq).output
    assert torch.equal(logits[:, 2:-1].argmax(-1), seq[:, 3:])


@needs_sdpa
@pytest.mark.parametrize("kind", CAUSAL_KINDS)
def test_cached_steps_equal_full_forward(kind):
    torch.manual_seed(0)
    m = build_model(_mixed_decoder([kind, "self_sdpa"])).double().eval()
    x = torch.randint(0, 61, (2, 9))
    with torch.no_grad():
        full = m(x).output
        cache = m.new_cache(2, 9)
        steps = [m.forward_one_step(x[:, :4], cache, 0)]  # prefill
        for t in range(4, 9):
            steps.append(m.forward_one_step(x[:, t : t + 1], cache, t))
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@needs_sdpa
@pytest.mark.parametrize("variant", [
    {"norm": "adaptive", "norm_placement": "pre_post", "positional": "learned"},
    {"norm": "layer", "norm_placement": "post", "positional": "sinusoidal", "bias": True},
    {"norm": "rezero", "positional": "alibi", "layers": {"flow": {"mode": "predicted", "per_layer": True}}},
], ids=["adaptive-pre_post-learned", "layer-post-sinusoidal", "rezero-alibi-predicted"])
def test_cached_decoding_with_norms_positions_flow_and_sharing(variant):
    torch.manual_seed(0)
    layers = {"n_layers": 2, "repeat": {"mode": "cycle", "factor": 2}, "mlp": "moe",
              "params": {"mlp": {"num_experts": 3, "top_k": 2}}, **variant.pop("layers", {})}
    m = build_model(design(layers=layers, max_seq_len=32, **variant)).double().eval()
    if variant["norm"] == "rezero":
        for blk in m.stacks["layers"].blocks:
            torch.nn.init.constant_(blk.attn_norm.alpha, 0.5)
            torch.nn.init.constant_(blk.mlp_norm.alpha, 0.5)
    x = torch.randint(0, 61, (2, 10))
    with torch.no_grad():
        full = m(x).output
        cache = m.new_cache(2, 10)
        steps = [m.forward_one_step(x[:, :3], cache, 0)] + [m.forward_one_step(x[:, t : t + 1], cache, t) for t in range(3, 10)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


@needs_sdpa
def test_sliding_window_cache():
    d = design(layers={"n_layers": 2, "params": {"attention": {"window": 3}}}, max_seq_len=32)
    m = build_model(d).double().eval()
    x = torch.randint(0, 61, (1, 12))
    cache = m.new_cache(1, 12)
    with torch.no_grad():
        full = m(x).output
        steps = [m.forward_one_step(x[:, t : t + 1], cache, t) for t in range(12)]
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    kv = cache.layers[0]["self"]
    assert kv.window == 3 and kv.k.shape[2] <= 3


@needs_sdpa
def test_encoder_decoder_cached_decode_equals_full_decode():
    torch.manual_seed(0)
    m = build_model(encdec(decoder={"n_layers": 2, "repeat": {"mode": "cycle", "factor": 2}})).double().eval()
    src = torch.randint(0, 61, (2, 7))
    src_mask = torch.ones(2, 7, dtype=torch.bool)
    src_mask[1, 5:] = False
    tgt = torch.randint(0, 61, (2, 6))
    with torch.no_grad():
        memory = m.encode(src, src_mask)
        full = m.decode(tgt, memory, memory_mask=src_mask).output
        assert torch.allclose(full, m(src, tgt, mask=src_mask).output)
        cache = m.new_cache(2, 6)
        steps = [m.forward_one_step(tgt[:, :2], cache, 0, memory=memory, memory_mask=src_mask)]
        for t in range(2, 6):
            steps.append(m.forward_one_step(tgt[:, t : t + 1], cache, t))
    assert (torch.cat(steps, 1) - full).abs().max() <= 1e-5
    seq = m.generate(tgt[:, :1], 5, src=src, src_mask=src_mask)
    with torch.no_grad():
        logits = m(src, seq, mask=src_mask).output
    assert torch.equal(logits[:, :-1].argmax(-1), seq[:, 1:])


@needs_sdpa
def test_sampling_is_reproducible_and_respects_top_k():
    m = build_model(design()).eval()
    prompt = torch.randint(0, 61, (3, 2))
    a = m.generate(prompt, 6, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    b = m.generate(prompt, 6, temperature=1.0, top_k=5, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    from backend.nn.model import sample_next

    logits = torch.randn(4, 61)
    top = logits.topk(3).indices
    for seed in range(5):
        t = sample_next(logits, 1.0, 3, torch.Generator().manual_seed(seed))
        assert all(t[i, 0] in top[i] for i in range(4))


@needs_sdpa
def test_decoding_errors_are_clear():
    enc = build_model(design(architecture="encoder", task="mlm"))
    with pytest.raises(ValueError, match="causal"):
        enc.new_cache(1, 8)
    m = build_model(design())
    cache = m.new_cache(1, 8)
    with pytest.raises(ValueError, match="start_pos"):
        m.forward_one_step(torch.zeros(1, 1, dtype=torch.long), cache, 3)
    assert isinstance(cache, ModelCache)


# Test-local token mixers for the cache fallbacks: one mixes tokens without a
# cache (the model must recompute from the history), one is per-token.


class _PrefixMean(nn.Module):
    """Causal running mean of a projection (mixes tokens, no cache)."""

    def __init__(self, ctx):
        super().__init__()
        self.proj = nn.Linear(ctx.hidden_size, ctx.hidden_size)

    def forward(self, x, *, start_pos=0, cache=None, padding_mask=None):
        h = self.proj(x)
        return h.cumsum(1) / torch.arange(1, x.shape[1] + 1, dtype=x.dtype)[:, None]


class _PerToken(_PrefixMean):
    mixes_tokens = False

    def forward(self, x, *, start_pos=0, cache=None, padding_mask=None):
        return torch.tanh(self.proj(x))


REGISTRY["attention"]["_test_prefix_mean"] = _PrefixMean
REGISTRY["attention"]["_test_per_token"] = _PerToken


@needs_sdpa
@pytest.mark.parametrize("kind,recompute", [("_test_prefix_mean", True), ("_test_per_token", False)])
def test_uncached_kinds_decode_exactly(kind, recompute):
    cfg = model_config(_mixed_decoder(["self_sdpa", "self_sdpa"]))
    cfg["stacks"]["layers"]["layers"][1]["attention"] = kind
    torch.manual_seed(0)
    m = Transformer(cfg).double().eval()
    cache = m.new_cache(2, 10)
    assert cache.recompute is recompute
    seq = m.generate(torch.randint(0, 61, (2, 3)), 6)
    with torch.no_grad():
        logits = m(seq).output
    assert torch.equal(logits[:, 2:-1].argmax(-1), seq[:, 3:])
