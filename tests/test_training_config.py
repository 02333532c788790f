"""Run configs: TOML in, frozen dataclasses out, unknown keys and wrong types rejected by name."""

from __future__ import annotations

import dataclasses

import pytest

pytest.importorskip("torch")

from rtdecode.core.config import RunConfig, builtin_configs, load_config


def test_builtin_configs_load():
    assert set(builtin_configs()) >= {
        "small",
        "small_10ms",
        "small_behavior_input",
        "release",
        "spikes_only",
        "spikes_frames",
    }
    small = load_config("small")
    assert small.frames.enabled and [b.name for b in small.targets] == ["speed", "phi", "theta"]
    release = load_config("release")
    assert (release.model.d_model, release.model.n_heads, release.model.fused_layers) == (256, 8, 6)
    assert not load_config("spikes_only").behavior
    seeing = load_config("spikes_frames")  # spikes_only with small's frames: learns the spikes, sees the stimulus
    assert seeing.frames == small.frames and not seeing.behavior and not seeing.contrastive.enabled
    assert seeing.window == load_config("spikes_only").window
    coarse = load_config("small_10ms")  # small with the reference's 10-ms quanta and neuron order, nothing else
    assert small.window.dt == 0.005 and coarse.window.dt == 0.01  # 5 ms: a shorter streaming tail
    # spike-time order: sampled (neuron, offset) pairs cannot break it, so a closed loop reads histories it knows
    assert small.window.token_order == "time" and coarse.window.token_order == "neuron"
    assert dataclasses.replace(coarse, window=small.window) == small
    # for generation given the behavior: small with every behavior variable read, none decoded
    given = load_config("small_behavior_input")
    assert [b.name for b in given.inputs] == ["speed", "phi", "theta"] and not given.targets
    assert dataclasses.replace(given, behavior=small.behavior) == small


def test_unknown_key_names_the_allowed_ones():
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['widht'\] in \[model\]; allowed: .*d_model"):
        RunConfig.from_dict({"model": {"widht": 3}})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['trian'\] in \[config\]"):
        RunConfig.from_dict({"trian": {}})


@pytest.mark.parametrize(
    "patch, message",
    [
        ({"train": {"lr": "fast"}}, "train.lr must be a number"),
        ({"train": {"batch_size": 3.5}}, "train.batch_size must be an integer"),
        ({"frames": {"enabled": "yes"}}, "frames.enabled must be true or false"),
        ({"model": {"d_model": 30, "n_heads": 4}}, "divisible"),
        ({"window": {"window": 0.055}}, "multiple of dt"),
        ({"behavior": [{"name": "speed", "role": "both"}]}, "role must be"),
        ({"behavior": [{"name": "x", "kind": "classification", "bins": [1.0, 0.0]}]}, "strictly increasing"),
        ({"behavior": [{"name": "x"}, {"name": "x"}]}, "unique"),
        ({"contrastive": {"enabled": True, "pairs": [["spikes", "frames"]]}}, "not an enabled modality"),
        ({"model": {"frame_patch": [3, 8]}}, "must have 3 elements"),
        ({"model": {"attention_span": -1}}, "attention_span must be an integer >= 0"),
        ({"model": {"history_latents": 2.5}}, "history_latents must be an integer"),
        ({"window": {"context_at": "middle"}}, 'context_at must be "end" or "start"'),
    ],
)
def test_bad_values_are_rejected_with_the_field_named(patch, message):
    with pytest.raises(ValueError, match=message):
        RunConfig.from_dict(patch)


def test_round_trip_through_dict(tiny_config):
    assert RunConfig.from_dict(tiny_config.to_dict()) == tiny_config
    assert RunConfig.from_saved(tiny_config.to_dict()) == tiny_config


def test_a_run_saved_before_the_count_head_loads_without_one(tiny_config):
    """New options default on for new configs and off for saved runs that predate them (their weights lack
    the layer)."""
    saved = tiny_config.to_dict()
    del saved["model"]["count_head"]
    assert RunConfig.from_dict(saved).model.count_head
    assert not RunConfig.from_saved(saved).model.count_head


def test_missing_file_lists_builtins(tmp_path):
    with pytest.raises(
        FileNotFoundError,
        match="built-in configs: reference, release, rig, small, small_10ms, small_behavior_input, spikes_frames, spikes_only",
    ):
        load_config(tmp_path / "nope.toml")
