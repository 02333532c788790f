"""Tokenizer semantics: quantisation, ordering, SOS/EOS/PAD, truncation, history, vocab round trip."""

from __future__ import annotations

import numpy as np
import pytest

from rtdecode.data.tokenizer import Vocab, WindowConfig, pack_tokens, quantize, tokenize_session, window_range

CFG = WindowConfig(window=0.05, prev_window=0.05, dt=0.01, block_size=8, prev_block_size=5)
N = 6
V = Vocab.for_config(CFG, N)


def tok(times, neurons, start=0.0, stop=0.2, cfg=CFG):
    return tokenize_session(np.asarray(times, float), np.asarray(neurons), N, start, stop, cfg)


def test_quantize_puts_exact_boundaries_in_the_later_bin():
    t = np.array([0.0, 0.0099999, 0.01, 0.05, 0.15, 0.29, 0.3])
    assert quantize(t, CFG).tolist() == [0, 0, 1, 5, 15, 29, 30]


def test_quantize_respects_origin():
    cfg = WindowConfig(origin=1.003)
    assert quantize(np.array([1.003, 1.0129, 1.013]), cfg).tolist() == [0, 0, 1]


def test_tokens_ordered_by_bin_then_neuron_with_repeats():
    # window 0: neuron 4 at bin 0, neuron 1 at bin 0, neuron 2 twice at bin 3, neuron 0 at bin 2
    ts = tok([0.031, 0.001, 0.002, 0.021, 0.035], [2, 4, 1, 0, 2])
    b = ts.current([0])
    assert b.ids[0].tolist() == [V.id_sos, 1, 4, 0, 2, 2, V.id_eos, V.id_pad]
    assert b.dts[0].tolist() == [V.dt_sos, 0, 0, 2, 3, 3, V.dt_eos, V.dt_pad]
    assert b.lengths.tolist() == [7]
    assert b.truncated.tolist() == [0]


def test_time_order_puts_a_quantum_s_spikes_in_arrival_order_with_neuron_ties():
    # bin 0: neuron 4 at 1 ms, neuron 1 at 2 ms, neuron 3 and neuron 0 both at 5 ms (tie: neuron index)
    cfg = WindowConfig(window=0.05, prev_window=0.05, dt=0.01, block_size=8, prev_block_size=5, token_order="time")
    ts = tok([0.005, 0.002, 0.001, 0.005, 0.021], [3, 1, 4, 0, 2], cfg=cfg)
    b = ts.current([0])
    assert b.ids[0].tolist() == [V.id_sos, 4, 1, 0, 3, 2, V.id_eos, V.id_pad]
    assert b.dts[0].tolist() == [V.dt_sos, 0, 0, 0, 0, 2, V.dt_eos, V.dt_pad]
    with pytest.raises(ValueError, match="token_order"):
        WindowConfig(token_order="arrival")


def test_empty_window_is_sos_eos_then_pad():
    ts = tok([0.07], [3])
    b = ts.current([0, 1, 2])
    assert b.ids[0].tolist() == [V.id_sos, V.id_eos] + [V.id_pad] * 6
    assert b.lengths.tolist() == [2, 3, 2]


def test_overfull_window_keeps_earliest_and_counts():
    times = np.linspace(0.0, 0.049, 10)
    ts = tok(times, np.arange(10) % N)
    b = ts.current([0])
    assert b.lengths.tolist() == [8]
    assert b.truncated.tolist() == [4]
    assert b.ids[0, 1:7].tolist() == (np.arange(6) % N).tolist()
    assert b.ids[0, 7] == V.id_eos
    assert ts.truncation_stats() == {"windows_truncated": 1, "spikes_truncated": 4}


def test_history_is_previous_window_rebased_and_keeps_most_recent():
    times = [0.001, 0.011, 0.021, 0.031, 0.041, 0.045, 0.051]
    ts = tok(times, [0, 1, 2, 3, 4, 5, 0])
    h = ts.history([0, 1])
    assert h.lengths.tolist() == [0, 5]  # window 0 has no history; window 1 keeps the last 5 of 6
    assert h.truncated.tolist() == [0, 1]
    assert h.ids[1].tolist() == [1, 2, 3, 4, 5]
    assert h.dts[1].tolist() == [1, 2, 3, 4, 4]


def test_long_history_spans_several_windows():
    cfg = WindowConfig(window=0.05, prev_window=0.15, dt=0.01, block_size=8, prev_block_size=10)
    ts = tok([0.005, 0.06, 0.12, 0.17], [0, 1, 2, 3], stop=0.3, cfg=cfg)
    h = ts.history([3])  # window 3 = [0.15, 0.2); history = [0.0, 0.15)
    assert h.ids[0, :3].tolist() == [0, 1, 2]
    assert h.dts[0, :3].tolist() == [0, 6, 12]
    assert ts.vocab.n_time == 15


def test_spikes_before_first_window_are_history():
    ts = tok([0.02, 0.06], [1, 2], start=0.03, stop=0.2)
    assert ts.first_window == 1
    assert ts.history([0]).ids[0, 0] == 1
    assert ts.current([0]).ids[0, 1] == 2


def test_window_range_only_complete_windows():
    assert window_range(0.0, 1.0, CFG) == (0, 20)
    assert window_range(0.001, 0.999, CFG) == (1, 19)
    assert window_range(0.05, 0.05, CFG) == (1, 1)


def test_config_rejects_non_multiple_windows_and_unknown_keys():
    with pytest.raises(ValueError, match="multiple of dt"):
        WindowConfig(window=0.055, dt=0.01)
    with pytest.raises(ValueError, match="block_size"):
        WindowConfig(block_size=2)
    with pytest.raises(ValueError, match="unknown window config keys.*allowed"):
        WindowConfig.from_dict({"window": 0.05, "windw": 1})
    assert WindowConfig.from_dict(CFG.to_dict()) == CFG


def test_vocab_json_round_trip_and_specials():
    v = Vocab.for_config(CFG, 3, neuron_ids=[10, 20, 30])
    assert Vocab.from_json(v.to_json()) == v
    assert (v.id_sos, v.id_eos, v.id_pad, v.id_size) == (3, 4, 5, 6)
    assert (v.dt_sos, v.dt_eos, v.dt_pad, v.dt_size) == (5, 6, 7, 8)


def test_out_of_range_neuron_is_an_error_offline():
    with pytest.raises(ValueError, match="neuron indices"):
        tok([0.01], [N])


def test_pack_tokens_matches_per_window_reference():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 12, 50)
    neurons = rng.integers(0, N, counts.sum()).astype(np.int32)
    offsets = rng.integers(0, 5, counts.sum())
    b = pack_tokens(neurons, offsets, counts, 8, V, sos_eos=True, keep="first")
    start = 0
    for i, c in enumerate(counts):
        k = min(c, 6)
        expect = [V.id_sos, *neurons[start : start + k], V.id_eos] + [V.id_pad] * (6 - k)
        assert b.ids[i].tolist() == expect
        start += c


def test_offline_tokenizer_is_vectorised_and_fast_enough_for_a_session():
    # not a timing test: 1M spikes must simply finish (a Python loop over spikes would take minutes)
    rng = np.random.default_rng(0)
    t = np.sort(rng.uniform(0, 600, 1_000_000))
    ts = tokenize_session(t, rng.integers(0, 300, t.size), 300, 0, 600, WindowConfig())
    assert ts.n_windows == 12000
    assert ts.window_counts.sum() == t.size
