"""Model structure: shapes, masks (PAD never attended), KV-cache equivalence, attention recording, generation."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from rtdecode.core.config import RunConfig
from rtdecode.core.window_data import WindowData
from rtdecode.export.forms import forward_tokens_past
from rtdecode.runtime.sampling import WindowSampler, nucleus, sample
from rtdecode.runtime.streaming import stream_feeds
from rtdecode.training.data import to_torch
from rtdecode.training.generate import SamplingConfig, TokenCache, forward_cached, generate_window
from rtdecode.training.losses import compute_losses
from rtdecode.training.model import Neuroformer


@pytest.fixture(params=["whole", "bounded"])
def setup(request, tiny_session, tiny_config):
    """The tiny model as configured, and bounded: self-attention over the last 5 tokens, history read through
    4 latent summaries (`ModelConfig.attention_span`, `history_latents`): every test holds for both."""
    if request.param == "bounded":
        d = tiny_config.to_dict()
        d["model"].update(attention_span=5, history_latents=4)
        tiny_config = RunConfig.from_dict(d)
    torch.manual_seed(0)
    data = WindowData(tiny_session, tiny_config)
    norm = data.normalisation(np.arange(data.n_windows))
    model = Neuroformer(tiny_config, data.tokens.vocab).eval()
    return model, data, norm


def busy_windows(data, n=4):
    counts = data.tokens.window_counts
    return np.argsort(-counts, kind="stable")[:n]


def test_output_shapes(setup):
    model, data, norm = setup
    w = busy_windows(data)
    batch = to_torch(data.batch(w, norm), "cpu")
    out = model(batch)
    B, T = batch["ids"].shape
    assert out.id_logits.shape == (B, T, data.tokens.vocab.id_size)
    assert out.dt_logits.shape == (B, T, data.tokens.vocab.dt_size)
    assert out.behavior["speed"].shape == (B,) and out.behavior["phi"].shape == (B, 4)
    assert set(out.contrastive) == {"spikes", "frames", "speed"}
    losses = compute_losses(out, batch, model.cfg, model.vocab)
    assert all(torch.isfinite(v) for v in losses.values())


def test_pad_tokens_never_influence_valid_positions_or_decodes(setup):
    model, data, norm = setup
    w = busy_windows(data)
    b = data.batch(w, norm, trim=False)
    ref = model(to_torch(b, "cpu"))
    scrambled = {k: v.copy() for k, v in b.items()}
    rng = np.random.default_rng(0)
    pad_cur = np.arange(b["ids"].shape[1])[None, :] >= b["lengths"][:, None]
    pad_hist = np.arange(b["prev_ids"].shape[1])[None, :] >= b["prev_lengths"][:, None]
    assert pad_cur.any() and pad_hist.any()
    n = model.vocab.n_neurons
    scrambled["ids"][pad_cur] = rng.integers(0, n, pad_cur.sum())
    scrambled["dts"][pad_cur] = rng.integers(0, 5, pad_cur.sum())
    scrambled["prev_ids"][pad_hist] = rng.integers(0, n, pad_hist.sum())
    out = model(to_torch(scrambled, "cpu"))
    valid = torch.from_numpy(~pad_cur)
    torch.testing.assert_close(out.id_logits[valid], ref.id_logits[valid], atol=1e-5, rtol=0)
    for name in ("speed", "phi"):
        torch.testing.assert_close(out.behavior[name], ref.behavior[name], atol=1e-5, rtol=0)


def test_trimmed_batch_gives_the_same_outputs(setup):
    model, data, norm = setup
    w = np.arange(10, 18)
    full, trimmed = model(to_torch(data.batch(w, norm, trim=False), "cpu")), model(to_torch(data.batch(w, norm), "cpu"))
    T = trimmed.id_logits.shape[1]
    torch.testing.assert_close(trimmed.id_logits, full.id_logits[:, :T], atol=1e-5, rtol=0)
    torch.testing.assert_close(trimmed.behavior["speed"], full.behavior["speed"], atol=1e-5, rtol=0)


def test_empty_history_gives_finite_outputs(setup):
    model, data, norm = setup
    b = data.batch(np.arange(4), norm)
    b["prev_lengths"][:] = 0
    b["prev_ids"][:] = model.vocab.id_pad
    out = model(to_torch(b, "cpu"))
    assert torch.isfinite(out.id_logits).all() and torch.isfinite(out.behavior["speed"]).all()


def test_incremental_decoding_with_kv_cache_matches_full_forward(setup):
    model, data, norm = setup
    batch = to_torch(data.batch(busy_windows(data), norm), "cpu")
    with torch.no_grad():
        ctx = model.encode_context(batch)
        full = model.forward_tokens(batch["ids"], batch["dts"], ctx)
        cache = TokenCache.empty(model)
        T = batch["ids"].shape[1]
        cuts = [0, 1, 2, 7, 8, T // 2, T]
        parts = [
            forward_cached(model, batch["ids"][:, a:b], batch["dts"][:, a:b], ctx, cache)
            for a, b in zip(cuts, cuts[1:])
        ]
    assert cache.length == T
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-5


def test_the_stream_graphs_lean_path_matches_full_forward(setup):
    """`forward_tokens_past` (flat tokens, one fused q/k/v matmul, additive masks: what the stream graph runs)
    against the plain forward, chunk by chunk, with a batch of several windows; the cache slots and the mask are
    the runtime's (`stream_feeds`), so a bounded span is checked as the daemon applies it."""
    model, data, norm = setup
    batch = to_torch(data.batch(busy_windows(data), norm), "cpu")
    span = model.cfg.model.attention_span
    with torch.no_grad():
        ctx = model.encode_context(batch)
        full = model.forward_tokens(batch["ids"], batch["dts"], ctx)
        B, T = batch["ids"].shape
        L = len(model.feature) + len(model.fused)
        m = model.cfg.model
        cache_k = np.zeros((L, B, m.n_heads, T, m.d_model // m.n_heads), np.float32)
        cache_v, parts, cuts = cache_k.copy(), [], [0, 1, 2, 7, 9, 20, T]
        for a, b in zip(cuts, cuts[1:]):
            ids, dts = batch["ids"][:, a:b], batch["dts"][:, a:b]
            feeds = stream_feeds(ids.numpy(), dts.numpy(), a, cache_k, cache_v, {}, np.zeros(1), span=span)
            past_k = [torch.from_numpy(feeds[f"past_k{i}"]) for i in range(L)]
            past_v = [torch.from_numpy(feeds[f"past_v{i}"]) for i in range(L)]
            bias = torch.from_numpy(feeds["mask"])
            h, nk, nv = forward_tokens_past(model, ids, dts, ctx, past_k, past_v, torch.tensor(a), bias)
            assert len(nk) == len(nv) == L
            cache_k[:, :, :, a:b], cache_v[:, :, :, a:b] = torch.stack(nk).numpy(), torch.stack(nv).numpy()
            parts.append(h)
    assert (torch.cat(parts, 1) - full).abs().max().item() < 1e-5


def test_a_bounded_span_limits_what_a_token_reads(tiny_session, tiny_config):
    """With span s, a token reads s tokens per causal block: two blocks, so a change at position 0 reaches no
    position past 2(s - 1); without a span it reaches every later position."""
    d = tiny_config.to_dict()
    d["model"].update(attention_span=5)
    cfg = RunConfig.from_dict(d)
    data = WindowData(tiny_session, cfg)
    torch.manual_seed(0)
    model = Neuroformer(cfg, data.tokens.vocab).eval()
    batch = to_torch(data.batch(busy_windows(data, 1), data.normalisation(np.arange(data.n_windows))), "cpu")
    changed = {k: v.clone() for k, v in batch.items()}
    changed["ids"][0, 1] = (changed["ids"][0, 1] + 1) % model.vocab.n_neurons  # position 1 (0 is SOS)
    with torch.no_grad():
        a, b = model(batch).id_logits[0], model(changed).id_logits[0]
    moved = (a - b).abs().amax(-1) > 1e-6
    assert moved[1:10].all() and not moved[10:].any()


def test_recorded_attention_equals_fast_path(setup):
    model, data, norm = setup
    batch = to_torch(data.batch(busy_windows(data), norm), "cpu")
    with torch.no_grad():
        fast = model(batch).id_logits
        for blk in model.feature:
            blk.attn.record = True
        slow = model(batch).id_logits
        weights = model.feature[0].attn.last_weights
    torch.testing.assert_close(slow, fast, atol=1e-5, rtol=1e-5)
    T = batch["ids"].shape[1]
    assert weights.shape == (4, model.cfg.model.n_heads, T, T)
    assert torch.all(weights.triu(diagonal=1) == 0)  # causal: no attention to later tokens
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights.sum(-1)))


def test_generation_stops_at_eos_and_respects_block_size(setup):
    model, data, norm = setup
    batch = to_torch(data.batch(np.arange(6), norm), "cpu")
    ctx = model.encode_context(batch)
    ids, dts = generate_window(model, ctx, SamplingConfig(temperature=1.0, top_p=1.0, seed=0))
    limit = model.cfg.window.max_spikes
    for i, d in zip(ids, dts):
        assert i.size <= limit
        assert ((i >= 0) & (i < model.vocab.n_neurons)).all()  # never a special token
        assert (np.diff(d) >= 0).all() and ((d >= 0) & (d < model.cfg.window.bins_per_window)).all()
    # without the count head: a model whose EOS logit dominates stops at once
    eos_only = SamplingConfig(seed=0, use_count=False)
    with torch.no_grad():
        model.id_head.bias[model.vocab.id_eos] = 1e4
    ids, _ = generate_window(model, ctx, eos_only)
    assert all(i.size == 0 for i in ids)
    # one that never emits EOS fills exactly the block
    with torch.no_grad():
        model.id_head.bias[model.vocab.id_eos] = -1e4
    ids, _ = generate_window(model, ctx, eos_only)
    assert all(i.size == limit for i in ids)


def test_generated_windows_hold_the_count_heads_draw(setup):
    """The count head, not EOS, sets a window's size: whatever the EOS logit, each window holds a Poisson draw
    of the head's expected count (the sampler's own seeded draw, made before any token's), capped at the spike
    slots."""
    model, data, norm = setup
    model = copy.deepcopy(model)
    batch = to_torch(data.batch(np.arange(64), norm), "cpu")
    limit = model.cfg.window.max_spikes
    with torch.no_grad():
        for p in model.count_head.parameters():  # a constant count: the linear path's bias alone
            p.zero_()
        for eos_bias in (1e4, -1e4):  # EOS always or never the likeliest token: the count rules either way
            model.id_head.bias[model.vocab.id_eos] = eos_bias
            for log_rate, expect in ((-30.0, 0), (30.0, limit)):
                model.count_head.linear.bias.fill_(log_rate)
                ids, _ = generate_window(model, model.encode_context(batch), SamplingConfig(seed=0))
                assert all(i.size == expect for i in ids)
        model.count_head.linear.bias.fill_(float(np.log(3.0)))
        ids, _ = generate_window(model, model.encode_context(batch), SamplingConfig(seed=1))
    sampler = WindowSampler(model.vocab, model.cfg.window.bins_per_window, 64, seed=1)
    drawn = sampler.set_counts(np.full(64, np.log(3.0)), limit)
    assert [i.size for i in ids] == drawn.tolist() and 2.0 < drawn.mean() < 4.0


def test_seeded_sampling_is_reproducible(setup):
    model, data, norm = setup
    ctx = model.encode_context(to_torch(data.batch(np.arange(3), norm), "cpu"))
    a = generate_window(model, ctx, SamplingConfig(seed=5))
    b = generate_window(model, ctx, SamplingConfig(seed=5))
    assert all(np.array_equal(x, y) for x, y in zip(a[0], b[0]))


def test_top_p_keeps_the_smallest_nucleus():
    logits = np.log(np.array([[0.15, 0.5, 0.05, 0.3]], np.float32))
    order, p = nucleus(logits, 1.0, 0.7)
    assert sorted(order[0, p[0] > 0].tolist()) == [1, 3]
    np.testing.assert_allclose(p.sum(-1), 1.0, rtol=1e-6)
    order, p = nucleus(logits, 1.0, 1.0)
    assert (p > 0).all()


def test_weight_decay_only_on_linear_and_conv_weights(setup):
    model, _, _ = setup
    opt = model.configure_optimizer(1e-3, (0.9, 0.95), 0.1)
    decay, no_decay = opt.param_groups
    decayed = {id(p) for p in decay["params"]}
    assert id(model.id_emb.weight) not in decayed and id(model.null_memory) not in decayed
    assert id(model.id_head.weight) in decayed and id(model.id_head.bias) not in decayed
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_a_draw_above_the_rounded_total_never_picks_a_masked_token():
    """Seven equal probabilities sum to a hair under 1 (with float32 logits, as the runtime's are, the gap is about
    1e-7): a uniform draw above that sum used to fall through to the last token in probability order, a masked
    one (zero probability), generated as a neuron index past the vocabulary or a time offset outside the window.
    Found by the demo's report, which counts generated spikes per neuron."""

    class HighDraw:
        def random(self, shape: tuple[int, ...]) -> np.ndarray:
            return np.full(shape, np.nextafter(1.0, 0.0))

    logits = np.array([[0.0] * 7 + [-np.inf, -np.inf]])
    assert sample(logits, 1.0, 1.0, HighDraw())[0] < 7  # type: ignore[arg-type]


def test_count_loss_is_poisson_and_scale_free():
    """The count loss is lowest (zero gradient) where the head's rate equals the window's spike count, and its
    gradient does not grow with the rate (it is divided by the batch's mean count)."""
    from rtdecode.training.losses import count_loss

    for count in (3.0, 300.0):
        lengths = torch.tensor([count + 2.0] * 4)  # SOS and EOS are not spikes
        log_rate = torch.full((4,), float(np.log(count)), requires_grad=True)
        loss = count_loss(log_rate, lengths)
        loss.backward()
        assert float(log_rate.grad.abs().max()) < 1e-5 and abs(loss.item()) < 1e-5  # 0 at the right rate
        log_rate = torch.full((4,), float(np.log(2 * count)), requires_grad=True)
        count_loss(log_rate, lengths).backward()
        torch.testing.assert_close(log_rate.grad, torch.full((4,), 0.25))  # (2c - c) / c / batch of 4


def test_history_counts_per_window_length_stretch():
    """History tokens are counted per window-length stretch of the history (oldest first), PAD slots not."""
    from rtdecode.training.counts import history_log_counts

    # 10 quanta per window, a 25-quantum history: stretches [0, 10), [10, 20), [20, 25)
    prev_dts = torch.tensor([[0, 3, 9, 10, 24, 7, 7]])
    valid = torch.tensor([[True, True, True, True, True, False, False]])
    counts = torch.expm1(history_log_counts(prev_dts, valid, bins_per_window=10, prev_bins=25))
    torch.testing.assert_close(counts, torch.tensor([[3.0, 1.0, 1.0]]))


def test_count_head_starts_at_the_poisson_glm():
    """`init_glm` finds the Poisson GLM's coefficients, and the head then predicts exactly the GLM (MLP at 0)."""
    from rtdecode.training.counts import CountHead

    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.normal(size=(20000, 2)).astype(np.float32))
    y = torch.from_numpy(rng.poisson(np.exp(2.0 + 0.8 * x[:, 0].numpy() - 0.3 * x[:, 1].numpy())))
    head = CountHead(d=8, n_stretches=2, n_pooled=1)
    head.init_glm(x, y)
    torch.testing.assert_close(head.linear.weight[0], torch.tensor([0.8, -0.3]), atol=0.02, rtol=0)
    assert abs(head.linear.bias.item() - 2.0) < 0.02
    with torch.no_grad():
        out = head(x[:5], [torch.randn(5, 8)])
    torch.testing.assert_close(out, x[:5] @ head.linear.weight[0] + head.linear.bias)


def test_the_count_head_reads_the_behavior_inputs_on_its_linear_path(setup):
    """The tiny config reads theta as an input: its recent mean value and that value squared are linear features of
    the count head, so a window count the behavior moves is predicted from the behavior even with the history
    held fixed (before, only an MLP over learned tokens could find it, and after training it had not: a closed loop
    whose history is its own lost the behavior's pull on the population rate)."""
    from rtdecode.training.counts import behavior_count_features, init_count_head

    model, data, norm = setup
    windows = busy_windows(data, 8)
    batch = to_torch(data.batch(windows, norm), "cpu")
    feats = behavior_count_features(batch, ["theta"])
    ok = batch["in_theta_valid"].float()
    mean = (batch["in_theta"] * ok).sum(1) / ok.sum(1).clamp_min(1)
    torch.testing.assert_close(feats, torch.stack([mean, mean * mean], 1))
    with torch.no_grad():
        head = model.count_head
        head.linear.weight.zero_()
        head.linear.weight[0, -2] = 0.5  # log-rate rises with theta's recent mean
        head.mlp[-1].weight.zero_()  # the linear path alone
        head.mlp[-1].bias.zero_()
        base = model.encode_context(batch).count_log_rate
        shifted = dict(batch, in_theta=batch["in_theta"] + 1.0)
        moved = model.encode_context(shifted).count_log_rate
    has_any = ok.sum(1) > 0
    torch.testing.assert_close(moved[has_any] - base[has_any], torch.full_like(base[has_any], 0.5))
    # the GLM start fits the behavior terms: counts drawn from theta alone give a clearly positive weight
    rng = np.random.default_rng(0)
    all_windows = np.arange(data.n_windows)
    full = data.batch(all_windows, norm)
    okf = full["in_theta_valid"].astype(np.float32)
    theta = (full["in_theta"] * okf).sum(1) / np.maximum(okf.sum(1), 1)
    drawn = rng.poisson(np.exp(1.5 + 0.7 * theta))

    class Redrawn:  # the same windows, their counts replaced by the theta-driven draw
        def __init__(self, inner):
            self.inner = inner

        def batch(self, w, n):
            b = self.inner.batch(w, n)
            b["lengths"] = (drawn[w] + 2).astype(b["lengths"].dtype)
            return b

    init_count_head(model, Redrawn(data), all_windows, norm, seed=0)
    assert abs(model.count_head.linear.weight[0, -2].item() - 0.7) < 0.15


def test_a_count_head_saved_without_behavior_terms_loads_and_predicts_as_before(setup, tmp_path):
    """Weights saved before the count head's linear path read the behavior inputs (history-count weights only) load
    with the behavior terms at zero: the same expected counts as that head gave."""
    from safetensors.torch import load_file, save_file

    from rtdecode.training.checkpoint import load_weights, save_weights

    model, data, norm = setup
    with torch.no_grad():
        model.count_head.linear.weight[0, -2:] = 0.0  # what the old head computed
    batch = to_torch(data.batch(busy_windows(data), norm), "cpu")
    with torch.no_grad():
        before = model.encode_context(batch).count_log_rate
    save_weights(model, tmp_path / "m.safetensors")
    state = load_file(str(tmp_path / "m.safetensors"))
    state["count_head.linear.weight"] = state["count_head.linear.weight"][:, :-2].contiguous()  # the old shape
    save_file(state, str(tmp_path / "old.safetensors"))
    with torch.no_grad():
        model.count_head.linear.weight.fill_(3.0)
    load_weights(model, tmp_path / "old.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model.encode_context(batch).count_log_rate, before)


def test_count_intercept_refit_matches_the_mean_count(setup):
    """`refit_count_intercept` leaves the head's expected counts (eval mode) summing to the windows' spike counts:
    the Poisson MLE of its intercept. A head off by a factor e (as after training with dropout and weight decay,
    by less) is brought back in one step, and the model's train/eval mode is kept."""
    from rtdecode.training.counts import refit_count_intercept

    model, data, norm = setup
    windows = np.arange(min(data.n_windows, 300))
    batch = to_torch(data.batch(windows, norm), "cpu")
    observed = float((batch["lengths"] - 2).clamp_min(0).sum())
    with torch.no_grad():
        model.count_head.linear.bias.add_(1.0)
        before = float(model.encode_context(batch).count_log_rate.double().exp().sum())
    model.train()
    shift = refit_count_intercept(model, data, windows, norm, "cpu")
    assert model.training and shift == pytest.approx(np.log(observed / before), abs=1e-4)
    model.eval()
    with torch.no_grad():
        expected = float(model.encode_context(batch).count_log_rate.double().exp().sum())
    assert expected == pytest.approx(observed, rel=1e-4)
