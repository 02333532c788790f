"""Multi-session training: sessions joined on one timeline with their own units, split one by one, trained as one
model, scored per session and written back as ordinary per-session runs that export and decode. Real training
and export on two tiny simulated days of one circuit."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from rtdecode.core.config import RunConfig
from rtdecode.core.window_data import WindowData, context_reach, make_split
from rtdecode.data.joined import join_sessions, session_parts, windows_of_part
from rtdecode.data.session import Behavior, Session, SessionError
from rtdecode.io import save_session
from rtdecode.sim.days import save_days, simulate_days
from tests.conftest import TINY_SIM, tiny_config_dict


@pytest.fixture(scope="module")
def days() -> list[Session]:
    """Two days of the tiny circuit, 45 of its 60 neurons each, renumbered by the 'sorter'."""
    return simulate_days(TINY_SIM, days=2, overlap=0.7, recorded=45, drift=0.1)


def test_joined_sessions_keep_their_units_apart_and_their_contexts_separate(days: list[Session]) -> None:
    joined = join_sessions(days, ["a", "b"], gap=2.0)
    parts = session_parts(joined)
    assert parts is not None and [p.name for p in parts] == ["a", "b"]
    a, b = parts
    assert (a.first_unit, a.n_units, b.first_unit, b.n_units) == (0, 45, 45, 45) and joined.n_neurons == 90
    assert b.start == pytest.approx(a.stop + 2.0) and joined.stop == pytest.approx(b.stop)
    assert list(b.unit_ids) == days[1].neuron_ids.tolist()  # each part keeps its own unit IDs
    in_b = joined.spike_times >= b.start
    assert joined.spike_neurons[in_b].min() >= 45 and joined.spike_neurons[~in_b].max() < 45
    np.testing.assert_allclose(joined.spike_times[in_b] - b.offset, days[1].spike_times)
    assert joined.frames.shape[0] == days[0].frames.shape[0] + days[1].frames.shape[0]
    for name, beh in days[1].behavior.items():
        assert np.array_equal(joined.behavior[name].values[-beh.values.size :], beh.values)


def test_each_session_is_split_on_its_own_and_no_window_reads_across(days: list[Session]) -> None:
    cfg = RunConfig.from_dict(tiny_config_dict())
    reach = cfg.window.window + context_reach(cfg)
    joined = join_sessions(days, ["a", "b"], gap=2 * reach)
    data = WindowData(joined, cfg)
    split = make_split(data, cfg)
    starts = data.tokens.window_starts()
    used = np.concatenate([split.train, split.val, split.test])
    parts = session_parts(joined)
    assert parts is not None
    for part in parts:
        mine = windows_of_part(starts, cfg.window.window, part)
        for piece in (split.train, split.val, split.test):
            assert np.intersect1d(piece, mine).size > 0  # every session trains, validates and tests
        # a window's context reaches back `reach` at most: inside its own session
        assert (starts[np.intersect1d(used, mine)] - context_reach(cfg) >= part.start - 1e-9 - reach).all()
    in_a_part = np.zeros(starts.size, bool)
    for part in parts:
        in_a_part[windows_of_part(starts, cfg.window.window, part)] = True
    assert in_a_part[used].all()  # no window of a gap is used


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: dataclasses.replace(s, behavior={k: v for k, v in s.behavior.items() if k != "speed"}), "speed"),
        (
            lambda s: dataclasses.replace(
                s,
                behavior={
                    **s.behavior,
                    "speed": Behavior(s.behavior["speed"].times, s.behavior["speed"].values, "mm/s"),
                },
            ),
            "mm/s",
        ),
        (lambda s: dataclasses.replace(s, frames=s.frames[:, :16], frame_times=s.frame_times), "frames are 16 x"),
        (lambda s: dataclasses.replace(s, frames=None, frame_times=None), "has video"),
    ],
)
def test_sessions_that_disagree_are_refused_by_name(days: list[Session], change, message: str) -> None:
    with pytest.raises(SessionError, match=message):
        join_sessions([days[0], change(days[1])], ["day0", "day1"], gap=1.0)


def test_names_must_fit_the_sessions(days: list[Session]) -> None:
    with pytest.raises(ValueError, match="2 names for 3 sessions"):
        join_sessions([*days, days[0]], ["a", "b"], gap=1.0)
    with pytest.raises(SessionError, match="unique"):
        join_sessions(days, ["a", "a"], gap=1.0)


def test_multi_session_training_scores_each_session_and_writes_per_session_runs(
    days: list[Session], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from safetensors.torch import load_file

    from rtdecode.runtime import Bundle, Decoder
    from rtdecode.training.checkpoint import LoadedRun, read_meta
    from rtdecode.training.sessions import train_sessions
    from tests.conftest import _export_tiny

    cfg = RunConfig.from_dict(tiny_config_dict(max_steps=10, eval_every=10))
    out = tmp_path / "joint"
    result = train_sessions(cfg, days, out, names=["day0", "day1"], log=lambda _: None)
    assert result.step == 10
    meta = read_meta(out)
    assert [s["name"] for s in meta["sessions"]] == ["day0", "day1"]
    for s in meta["sessions"]:
        assert s["test_windows"] > 0 and np.isfinite(s["test"]["speed_r"])

    joint = load_file(str(out / "model.safetensors"))
    for s, day in zip(meta["sessions"], days):
        run = LoadedRun(out / "sessions" / s["name"])
        assert run.vocab.n_neurons == 45 and list(run.vocab.neuron_ids) == day.neuron_ids.tolist()
        rows = slice(s["first_unit"], s["first_unit"] + 45)
        state = run.model.state_dict()
        assert np.array_equal(state["id_emb.weight"][:45].numpy(), joint["id_emb.weight"][rows].numpy())
        assert np.array_equal(state["id_head.bias"][45:].numpy(), joint["id_head.bias"][90:].numpy())  # specials
        assert np.array_equal(state["fused.0.ln1.weight"].numpy(), joint["fused.0.ln1.weight"].numpy())
    # a per-session run exports and decodes its own session like any run
    bundle = _export_tiny(out / "sessions" / "day1", days[1], tmp_path / "bundle1")
    decoder = Decoder(Bundle.load(bundle))
    data = WindowData(days[1], decoder.bundle.config)
    out_units = decoder.decode(data.batch(make_split(data, decoder.bundle.config).test[:4], decoder.bundle.norm))
    assert np.isfinite(out_units["speed"]).all()


def test_train_cli_takes_several_sessions_or_a_days_folder_and_adapt_refuses_unit_ids(
    days: list[Session], tmp_path: Path
) -> None:
    pytest.importorskip("torch")
    from typer.testing import CliRunner

    from rtdecode.cli import app

    save_days(days, tmp_path / "days")
    (tmp_path / "cfg.toml").write_text(_toml(tiny_config_dict(max_steps=4, eval_every=4)))
    r = CliRunner().invoke(
        app,
        [
            "train",
            "--data",
            str(tmp_path / "days"),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(tmp_path / "cfg.toml"),
        ],
    )
    assert r.exit_code == 0, r.output
    assert (tmp_path / "run" / "sessions" / "day0" / "model.safetensors").exists()
    assert (tmp_path / "run" / "sessions" / "day1" / "checkpoint.json").exists()
    # sessions that disagree: one clear line
    bad = dataclasses.replace(days[1], behavior={k: v for k, v in days[1].behavior.items() if k != "theta"})
    save_session(bad, tmp_path / "bad.npz")
    args = ["train", "--data", str(tmp_path / "days" / "day0.npz"), "--data", str(tmp_path / "bad.npz")]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "bad"), "--config", str(tmp_path / "cfg.toml")])
    assert r.exit_code == 2 and "theta" in " ".join(r.output.split())
    # unit IDs repeat across a joint run's sessions: export and adapting by unit ID name a per-session run instead
    r = CliRunner().invoke(app, ["export", "--from", str(tmp_path / "run"), "--out", str(tmp_path / "b")])
    assert r.exit_code == 2 and "sessions/<name>" in "".join(r.output.split())
    args = ["adapt", "--from", str(tmp_path / "run"), "--data", str(tmp_path / "days" / "day1.npz")]
    r = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "ad"), "--same-units", "--steps", "2"])
    assert r.exit_code == 2 and "sessions/<name>(day0,day1)" in "".join(r.output.split())


def _toml(d: dict) -> str:
    """The tiny config dict as TOML (tables and arrays of tables; values JSON-compatible)."""
    lines = []
    for key, value in d.items():
        if isinstance(value, list):
            for item in value:
                lines.append(f"[[{key}]]")
                lines += [f"{k} = {json.dumps(v)}" for k, v in item.items()]
        else:
            lines.append(f"[{key}]")
            lines += [f"{k} = {json.dumps(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
