"""Every attention / token-mixer kind, parametrised over backend.registry.ATTENTION.

Checks: forward/backward and gradients, causality, KV-/state-cached decoding
against the full forward pass, slow references (tests/reference_attention.py),
nn.MultiheadAttention equivalence, GQA, Performer convergence, meta builds.
"""
from __future__ import annotations

import math

import pytest
import torch

import reference_attention as ref
from backend.nn.common import REGISTRY, KVCache, LayerContext
from backend.registry import ATTENTION, CROSS

D, H, HKV, DH, L = 32, 4, 2, 8, 16  # hidden, heads, kv heads, head dim, max_seq_len
S = 10

for _info in list(ATTENTION.values()) + [CROSS]:
    _info.load()  # imports the module, registering its class

KINDS = list(ATTENTION)
# (an empty sublayer, `none`, outputs nothing for any input: there is no causality to test)
CAUSAL_KINDS = [k for k, info in ATTENTION.items() if info.causal and not info.identity]
# Kinds whose step-by-step decoding must equal the full forward pass.
DECODABLE = [k for k, info in ATTENTION.items() if info.cacheable]
MODES = [(k, c) for k, info in ATTENTION.items() for c in (True, False)
         if (c and info.causal) or (not c and info.bidirectional)]


def make(kind: str, *, causal: bool = True, positional: str = "rope", n_kv_heads: int = HKV,
         dtype=torch.float64, torch_seed: int = 0, layer_index: int = 1, **params):
    info = ATTENTION[kind] if kind != "cross" else CROSS
    ctx = LayerContext(hidden_size=D, n_heads=H, n_kv_heads=n_kv_heads, head_dim=DH, ffn_hidden=4 * D,
                       max_seq_len=L, positional=positional, causal=causal, layer_index=layer_index,
                       params=info.resolve_params(params, [kind]))
    torch.manual_seed(torch_seed)
    cls = REGISTRY["cross" if kind == "cross" else "attention"][kind]
    m = cls(ctx).to(dtype)
    _randomise(m)
    return m


def _randomise(m: torch.nn.Module) -> None:
    """Move parameters off their identity-ish inits so references are tested on generic weights."""
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("filter") or name.endswith("kernel"):
                p.add_(0.3 * torch.randn_like(p))
            elif name.endswith("_tokens"):
                p.normal_(0.0, 0.5)
            elif name == "weight" and p.dim() == 5:  # frequency mode weights
                p.normal_(0.0, 0.2)
            elif name.startswith("subln"):
                p.add_(0.1 * torch.randn_like(p))


def inputs(dtype=torch.float64, seed: int = 1, s: int = S, b: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, s, D, generator=g, dtype=dtype)


def decode(m, x, steps=(4, 2)):
    """Prefill / chunks from ``steps``, then one token at a time, through one cache."""
    cache = m.new_cache(x.shape[0], x.shape[1])
    outs, pos = [], 0
    sizes = list(steps) + [1] * (x.shape[1] - sum(steps))
    for n in sizes:
        outs.append(m(x[:, pos:pos + n], start_pos=pos, cache=cache))
        pos += n
    return torch.cat(outs, dim=1), cache


# ---------------------------------------------------------------------------
# Registry wiring


def test_every_registered_kind_has_a_module():
    for name, info in ATTENTION.items():
        assert REGISTRY["attention"][name] is info.load()
    assert REGISTRY["cross"]["cross"] is CROSS.load()
    for name in KINDS:
        assert REGISTRY["attention"][name].__doc__ and "arXiv" in REGISTRY["attention"][name].__doc__


# ---------------------------------------------------------------------------
# Forward / backward


@pytest.mark.parametrize("kind,causal", MODES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_backward_every_parameter_gets_a_gradient(kind, causal, dtype):
    m = make(kind, causal=causal, dtype=dtype)
    x = inputs(dtype).requires_grad_(True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.isfinite(y).all()
    (y.square().mean() + y.mean()).backward()
    assert torch.isfinite(x.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None, f"{kind}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{kind}: {name} gradient is all zero"


def test_non_causal_kinds_refuse_causal_stacks():
    for kind in [k for k, info in ATTENTION.items() if not info.causal]:
        with pytest.raises(ValueError, match="causal"):
            make(kind, causal=True)


def test_performer_refuses_alibi():
    with pytest.raises(ValueError, match="ALiBi"):
        make("causal_linear", positional="alibi")


# ---------------------------------------------------------------------------
# Causality


CAUSAL_CASES = [(k, {}) for k in CAUSAL_KINDS] + [
    ("self_sdpa", {"window": 3}),
    ("self_flex", {"window": 3, "softcap": 5.0, "alibi": True}),
    ("spectral", {"adaptive": True}),
]


@pytest.mark.parametrize("kind,params", CAUSAL_CASES, ids=lambda v: str(v))
def test_future_tokens_never_change_earlier_outputs(kind, params):
    m = make(kind, causal=True, **params)
    x = inputs()
    y = m(x)
    for t in (0, 3, S - 1):
        x2 = x.clone()
        x2[:, t:] += 5.0 * torch.randn_like(x2[:, t:])
        y2 = m(x2)
        assert torch.equal(y2[:, :t], y[:, :t]) or (y2[:, :t] - y[:, :t]).abs().max() < 1e-12, (kind, t)
        assert (y2[:, t:] - y[:, t:]).abs().max() > 1e-6  # the perturbation does reach later tokens


def test_prefix_lm_sees_the_whole_prefix():
    m = make("self_flex", causal=True, prefix_len=4)
    x = inputs()
    x2 = x.clone()
    x2[:, 3] += 1.0
    y, y2 = m(x), m(x2)
    assert (y2[:, 0] - y[:, 0]).abs().max() > 1e-6  # inside the prefix: bidirectional
    x3 = x.clone()
    x3[:, 6:] += 1.0
    assert (m(x3)[:, :6] - y[:, :6]).abs().max() < 1e-12  # after the prefix: causal


# ---------------------------------------------------------------------------
# Cached decoding == full forward (float64)


DECODE_CASES = [(k, {}) for k in DECODABLE] + [
    ("self_sdpa", {"window": 3}),
    ("self_sdpa", {"window": 3, "_positional": "alibi"}),
    ("self_sdpa", {"_n_kv_heads": 1}),
    ("self_flex", {"window": 4, "softcap": 3.0, "alibi": True}),
    ("self_flex", {"prefix_len": 4}),
    ("diff_attn", {"_positional": "none"}),
    ("spectral", {"adaptive": True}),
    ("token_param", {"normalization": "softmax"}),
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("kind,params", DECODE_CASES, ids=lambda v: str(v))
def test_cached_decoding_equals_full_forward(kind, params, dtype):
    """Max abs diff <= 1e-5 in both dtypes (measured: ~1e-15 in float64, <= 4e-7 in float32)."""
    params = dict(params)
    extra = {k[1:]: params.pop(k) for k in list(params) if k.startswith("_")}
    m = make(kind, causal=True, dtype=dtype, **extra, **params).eval()
    x = inputs(dtype, s=12)
    with torch.no_grad():
        full = m(x)
        stepped, cache = decode(m, x)
    diff = (stepped - full).abs().max().item()
    assert diff <= 1e-5, f"{kind} {params} {dtype}: max abs diff {diff:.2e}"
    if isinstance(cache, KVCache) and params.get("window"):
        assert cache.k.shape[2] == params["window"]  # the sliding cache really slides
    assert cache.length == x.shape[1]


def test_sliding_window_cache_trims_and_masks_padding():
    m = make("self_sdpa", window=3).eval()
    x = inputs(s=8)
    pad = torch.ones(2, 8, dtype=torch.bool)
    pad[1, :2] = False  # left padding in the second row
    with torch.no_grad():
        full = m(x, padding_mask=pad)
        cache = m.new_cache(2, 8)
        outs = [m(x[:, :3], cache=cache, padding_mask=pad[:, :3])]
        for t in range(3, 8):
            outs.append(m(x[:, t:t + 1], start_pos=t, cache=cache, padding_mask=pad[:, t:t + 1]))
    assert (torch.cat(outs, 1) - full).abs().max() < 1e-10
    assert cache.k.shape[2] == 3 and cache.pad.shape == (2, 3)


# ---------------------------------------------------------------------------
# Against the slow references


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("positional,params", [("rope", {}), ("none", {"window": 3}), ("alibi", {"backend": "math"})])
def test_self_sdpa_matches_reference(causal, positional, params):
    m = make("self_sdpa", causal=causal, positional=positional, **params)
    x = inputs(s=7)
    expect = ref.softmax_attention(m, x, causal=causal, window=params.get("window", 0),
                                   rope=positional == "rope", alibi=positional == "alibi")
    assert (m(x) - expect).abs().max() < 1e-10


@pytest.mark.parametrize("use_flex", [False, True])
@pytest.mark.parametrize("causal,params", [
    (True, {"window": 3, "softcap": 2.0}),
    (True, {"alibi": True, "prefix_len": 3}),
    (False, {"window": 2, "alibi": True}),
])
def test_self_flex_matches_reference(use_flex, causal, params, monkeypatch):
    m = make("self_flex", causal=causal, **params)
    monkeypatch.setattr(m, "use_flex", use_flex)
    if use_flex:  # make sure FlexAttention itself ran, not the fallback

        def no_fallback(*args):
            raise AssertionError("fell back to the math path")

        monkeypatch.setattr(m, "_math", no_fallback)
    x = inputs(s=7)
    expect = ref.softmax_attention(m, x, causal=causal, window=params.get("window", 0), rope=True,
                                   alibi=params.get("alibi", False), softcap=params.get("softcap", 0.0),
                                   prefix=params.get("prefix_len", 0) if causal else 0)
    with torch.no_grad():  # CPU FlexAttention runs (eagerly) only without autograd
        got = m(x)
    assert (got - expect).abs().max() < 1e-10


def test_self_flex_and_self_sdpa_agree_and_share_state_dicts():
    a = make("self_sdpa", window=3)
    b = make("self_flex", window=3, torch_seed=5)
    b.load_state_dict(a.state_dict())
    x = inputs()
    assert (a(x) - b(x)).abs().max() < 1e-12


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("n_kv_heads", [H, HKV])
def test_diff_attn_matches_reference(causal, n_kv_heads):
    m = make("diff_attn", causal=causal, n_kv_heads=n_kv_heads)
    x = inputs(s=6)
    assert (m(x) - ref.diff_attention(m, x, causal=causal, rope=True)).abs().max() < 1e-10


def test_diff_attn_lambda_init_schedule_and_shapes():
    for depth in (0, 1, 5):
        m = make("diff_attn", layer_index=depth)
        assert m.lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.3 * depth))
    assert make("diff_attn", lambda_init=0.5).lambda_init == 0.5
    m = make("diff_attn", n_kv_heads=H)  # official layout: D -> D everywhere when n_kv_heads == n_heads
    assert m.q_proj.weight.shape == (D, D) and m.k_proj.weight.shape == (D, D) and m.v_proj.weight.shape == (D, D)
    assert m.lambda_q1.shape == (DH // 2,) and m.subln.weight.shape == (DH,)


@pytest.mark.parametrize("normalization", ["gelu_l2", "softmax"])
def test_token_param_matches_reference(normalization):
    m = make("token_param", num_param_tokens=5, normalization=normalization)
    x = inputs(s=4)
    assert (m(x) - ref.token_param(m, x)).abs().max() < 1e-10


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("adaptive", [False, True])
@pytest.mark.parametrize("s", [L, 7])
def test_spectral_matches_reference(causal, adaptive, s):
    m = make("spectral", causal=causal, adaptive=adaptive)
    x = inputs(s=s)
    assert (m(x) - ref.spectral(m, x)).abs().max() < 1e-10


@pytest.mark.parametrize("mode_select,modes", [("lowest", 3), ("random", 4), ("lowest", 100)])
@pytest.mark.parametrize("s", [L, 9])
def test_frequency_matches_reference(mode_select, modes, s):
    m = make("frequency", causal=False, modes=modes, mode_select=mode_select, seed=3)
    assert len(m.index) == min(modes, L // 2)
    x = inputs(s=s)
    assert (m(x) - ref.frequency(m, x)).abs().max() < 1e-10


def test_frequency_random_modes_are_seeded():
    a = make("frequency", causal=False, modes=4, mode_select="random", seed=7)
    b = make("frequency", causal=False, modes=4, mode_select="random", seed=7)
    c = make("frequency", causal=False, modes=4, mode_select="random", seed=8)
    assert a.index == b.index and a.index != c.index


@pytest.mark.parametrize("kind", ["linear", "causal_linear"])
def test_performer_matches_reference(kind):
    m = make(kind, causal=kind == "causal_linear", positional="none", nb_features=12)
    x = inputs(s=6)
    assert (m(x) - ref.performer(m, x, causal=kind == "causal_linear")).abs().max() < 1e-10


def test_cross_attention_matches_reference_and_caches_memory():
    m = make("cross", n_kv_heads=HKV)
    x, mem = inputs(s=5), inputs(seed=9, s=7)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 5:] = False
    full = m(x, mem, memory_mask=mask)
    assert (full - ref.cross_attention(m, x, mem, mask)).abs().max() < 1e-10
    cache = m.new_cache(2, 7)
    steps = [m(x[:, :1], mem, cache=cache, memory_mask=mask)]
    k_first = cache.k
    steps += [m(x[:, t:t + 1], None, cache=cache) for t in range(1, 5)]  # memory projected once
    assert cache.k is k_first
    assert (torch.cat(steps, 1) - full).abs().max() < 1e-12


# ---------------------------------------------------------------------------
# self_sdpa against torch's own multi-head attention, and GQA against MHA


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("bias", [False, True])
def test_self_sdpa_equals_torch_multihead_attention(causal, bias):
    ctx = LayerContext(hidden_size=D, n_heads=H, n_kv_heads=H, head_dim=D // H, ffn_hidden=4 * D, max_seq_len=L,
                       positional="none", causal=causal, bias=bias, params={"window": 0, "backend": "auto"})
    torch.manual_seed(0)
    m = REGISTRY["attention"]["self_sdpa"](ctx).double()
    mha = torch.nn.MultiheadAttention(D, H, bias=bias, batch_first=True).double()
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([m.q_proj.weight, m.k_proj.weight, m.v_proj.weight]))
        mha.out_proj.weight.copy_(m.o_proj.weight)
        if bias:
            mha.in_proj_bias.copy_(torch.cat([m.q_proj.bias, m.k_proj.bias, m.v_proj.bias]))
            mha.out_proj.bias.copy_(m.o_proj.bias)
    x = inputs()
    blocked = torch.triu(torch.ones(S, S, dtype=torch.bool), 1) if causal else None  # True = may not attend
    expect, _ = mha(x, x, x, attn_mask=blocked, need_weights=False)
    assert (m(x) - expect).abs().max() < 1e-12
    assert (m(x) - ref.softmax_attention(m, x, causal=causal)).abs().max() < 1e-12


@pytest.mark.parametrize("n_kv_heads", [1, 2])
def test_gqa_equals_mha_with_repeated_kv_weights(n_kv_heads):
    g = make("self_sdpa", n_kv_heads=n_kv_heads)
    m = make("self_sdpa", n_kv_heads=H)
    rep = H // n_kv_heads
    with torch.no_grad():
        m.q_proj.weight.copy_(g.q_proj.weight)
        m.o_proj.weight.copy_(g.o_proj.weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(g, name).weight.view(n_kv_heads, DH, D)
            getattr(m, name).weight.copy_(w.repeat_interleave(rep, dim=0).reshape(H * DH, D))
    x = inputs()
    assert (g(x) - m(x)).abs().max() < 1e-12


@pytest.mark.parametrize("backend", ["math", "flash", "efficient"])
def test_sdpa_backends_agree_with_auto(backend):
    """Pinned kernels that cannot run on this device fall back to math instead of crashing."""
    auto = make("self_sdpa", dtype=torch.float32)
    pinned = make("self_sdpa", dtype=torch.float32, backend=backend)
    x = inputs(torch.float32).requires_grad_(True)
    y = pinned(x)
    y.sum().backward()
    assert (y - auto(x)).abs().max() < 1e-5
    pad = torch.ones(2, S, dtype=torch.bool)
    pad[0, -3:] = False
    assert (pinned(x, padding_mask=pad) - auto(x, padding_mask=pad)).abs().max() < 1e-5


@pytest.mark.parametrize("kind", ["self_sdpa", "self_flex", "diff_attn", "linear", "spectral", "frequency"])
def test_padded_keys_are_ignored(kind):
    m = make(kind, causal=False)
    x = inputs()
    pad = torch.ones(2, S, dtype=torch.bool)
    pad[:, 7:] = False
    x2 = x.clone()
    x2[:, 7:] = 100.0 * torch.randn_like(x2[:, 7:])
    y, y2 = m(x, padding_mask=pad), m(x2, padding_mask=pad)
    assert (y[:, :7] - y2[:, :7]).abs().max() < 1e-12
    if kind != "frequency":  # frequency's FFT length is the padded length, so its modes differ
        assert (y[:, :7] - m(x[:, :7])).abs().max() < 1e-12
    all_pad = torch.zeros(2, S, dtype=torch.bool)
    assert torch.isfinite(m(x, padding_mask=all_pad)).all()


# ---------------------------------------------------------------------------
# Performer specifics


@pytest.mark.parametrize("kind", ["linear", "causal_linear"])
def test_performer_error_falls_as_nb_features_grows(kind):
    """FAVOR+ vs exact softmax attention (same q/k/v/o weights), averaged over 4 projection seeds."""
    causal = kind == "causal_linear"
    exact = make("self_sdpa", causal=causal, positional="none", n_kv_heads=H)
    x = inputs(s=12)
    target = exact(x).detach()
    errors = {}
    for nb in (8, 32, 128, 512, 2048):
        errs = []
        for seed in range(4):
            m = make(kind, causal=causal, positional="none", n_kv_heads=H, nb_features=nb)
            m.load_state_dict({**exact.state_dict(), "projection": m.projection})
            m.redraw_projection(torch.Generator().manual_seed(100 + seed))
            errs.append(((m(x) - target).norm() / target.norm()).item())
        errors[nb] = sum(errs) / len(errs)
    print(f"{kind} relative error by nb_features:", {k: round(v, 4) for k, v in errors.items()})
    vals = list(errors.values())
    assert all(b < a for a, b in zip(vals, vals[1:])), errors
    assert vals[-1] < vals[0] / 5, errors


def test_favor_kernel_estimate_is_unbiased():
    """phi(q) . phi(k) -> exp(q . k / sqrt(d)) as features grow (catches non-Haar orthogonal blocks)."""
    from backend.nn.performer import orthogonal_gaussian, softmax_features

    g = torch.Generator().manual_seed(0)
    q = 0.6 * torch.randn(1, 1, 5, DH, generator=g, dtype=torch.float64)
    k = 0.6 * torch.randn(1, 1, 5, DH, generator=g, dtype=torch.float64)
    true = torch.exp(q[0, 0] @ k[0, 0].T / math.sqrt(DH))
    w = orthogonal_gaussian(1 << 16, DH, torch.Generator().manual_seed(1))
    feats = [softmax_features(t, w, is_query=False, stabilise_keys=False) for t in (q, k)]
    est = feats[0][0, 0] @ feats[1][0, 0].T
    assert ((est - true).abs() / true).max() < 0.1


def test_performer_projection_is_persistent_and_redrawn_on_schedule():
    m = make("causal_linear", redraw_interval=2, fix_projection=False).train()
    assert "projection" in m.state_dict()
    x = inputs()
    p0 = m.projection.clone()
    m(x)
    m(x)
    assert torch.equal(m.projection, p0)  # two calls with the first draw
    m(x)
    assert not torch.equal(m.projection, p0)  # third call redraws first
    fixed = make("causal_linear", redraw_interval=1, fix_projection=True).train()
    f0 = fixed.projection.clone()
    for _ in range(3):
        fixed(x)
    assert torch.equal(fixed.projection, f0)
    ev = make("causal_linear", redraw_interval=1, fix_projection=False).eval()
    e0 = ev.projection.clone()
    ev(x)
    ev(x)
    assert torch.equal(ev.projection, e0)  # never in eval mode


def test_performer_projection_rows_are_orthogonal_within_blocks():
    m = make("linear", causal=False, nb_features=2 * DH + 3)
    w = m.projection
    block = w[:DH] / w[:DH].norm(dim=1, keepdim=True)
    assert (block @ block.T - torch.eye(DH, dtype=w.dtype)).abs().max() < 1e-6  # drawn in float64, stored float32 at build


# ---------------------------------------------------------------------------
# Meta device


@pytest.mark.parametrize("kind,causal", MODES + [("cross", False)])
def test_meta_build_allocates_nothing(kind, causal):
    with torch.device("meta"):
        m = make(kind, causal=causal, dtype=torch.float32)
        tensors = list(m.parameters()) + list(m.buffers())
        assert (tensors or ATTENTION[kind].identity) and all(t.is_meta for t in tensors)  # `none` has no tensors
        x = torch.randn(2, S, D)
        y = m(x, x) if kind == "cross" else m(x)
    assert y.is_meta and y.shape == (2, S, D)


def test_meta_build_runs_no_initialiser_that_imports_dynamo():
    """DESIGN.md section 5: random init on meta imports torch._dynamo (~1.3 s); building must skip it."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, torch\n"
        "from backend.registry import ATTENTION, CROSS\n"
        "from backend.nn.common import LayerContext, REGISTRY\n"
        "for i in list(ATTENTION.values()) + [CROSS]: i.load()\n"
        "with torch.device('meta'):\n"
        "    for name, info in list(ATTENTION.items()) + [('cross', CROSS)]:\n"
        "        ctx = LayerContext(hidden_size=64, n_heads=4, n_kv_heads=2, head_dim=16, ffn_hidden=256,\n"
        "                           causal=info.causal, params=info.resolve_params({}, []))\n"
        "        REGISTRY['cross' if name == 'cross' else 'attention'][name](ctx)\n"
        "assert 'torch._dynamo' not in sys.modules\n"
    )
    root = Path(__file__).resolve().parent.parent
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True, timeout=120)


# ---------------------------------------------------------------------------
# Attention sinks (gpt-oss): against the explicit softmax with a sink column (Hugging Face's eager form)


@pytest.mark.parametrize("causal,window", [(True, 0), (True, 3), (False, 0)])
def test_attention_sinks_match_the_explicit_softmax(causal, window):
    from backend.nn.common import apply_rope, rope_cos_sin

    m = make("self_sdpa", causal=causal, window=window, sinks=True)
    with torch.no_grad():
        m.sinks.copy_(torch.randn(H, dtype=torch.float64, generator=torch.Generator().manual_seed(9)) * 2)
    x = inputs(s=7)
    pad = torch.ones(2, 7, dtype=torch.bool)
    pad[1, :2] = False  # left padding in the second row
    B, S_ = x.shape[:2]
    q = m.q_proj(x).view(B, S_, H, DH).transpose(1, 2)
    k = m.k_proj(x).view(B, S_, HKV, DH).transpose(1, 2).repeat_interleave(H // HKV, 1)
    v = m.v_proj(x).view(B, S_, HKV, DH).transpose(1, 2).repeat_interleave(H // HKV, 1)
    cos, sin = rope_cos_sin(torch.arange(S_), DH, 10000.0, q.dtype)
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
    scores = q @ k.transpose(-1, -2) / DH ** 0.5  # (B, H, S, S)
    i, j = torch.arange(S_)[:, None], torch.arange(S_)[None, :]
    allowed = pad[:, None, None, :].expand(B, 1, S_, S_).clone()
    if causal:
        allowed &= j <= i
    if window:
        allowed &= (i - j) < window
    scores = scores.masked_fill(~allowed, float("-inf"))
    logits = torch.cat([scores, m.sinks.view(1, H, 1, 1).expand(B, H, S_, 1)], -1)
    probs = torch.softmax(logits, -1)[..., :-1]  # the sink takes probability mass, contributes nothing
    expect = m.o_proj((probs @ v).transpose(1, 2).reshape(B, S_, H * DH))
    got = m(x, padding_mask=pad)
    assert (got - expect).abs().max() < 1e-10
    if causal:  # cached decoding with padding equals the full forward
        with torch.no_grad():
            cache = m.new_cache(2, 7)
            outs = [m(x[:, :3], cache=cache, padding_mask=pad[:, :3])]
            outs += [m(x[:, t:t + 1], start_pos=t, cache=cache, padding_mask=pad[:, t:t + 1]) for t in range(3, 7)]
        assert (torch.cat(outs, 1) - got).abs().max() < 1e-10
