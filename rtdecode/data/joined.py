"""Several recording sessions as one training set: one timeline, one vocabulary keyed by session and unit.

Multi-session training (`rtdecode train --data day0.npz --data day1.npz ...`) shares everything in the model but
the units: each session's units get their own range of the vocabulary (their own rows of the ID embedding and
the next-ID head), so unit 7 of one day and unit 7 of another are different tokens unless someone says they are
the same (`rtdecode adapt --same-units`). The backbone, behavior heads and count head are shared.

The sessions are laid end to end on one timeline, separated by a gap longer than anything a window reads back
(history, frames, behavior inputs), so no window's context crosses from one session into another; the windows
inside the gaps belong to no session and are never used. Splits are made inside each session (`split_parts`), so
every session has training, validation and test windows. The joined session records its parts in
`metadata["sessions"]` (`SessionPart`), which is how the split, the evaluation and the per-session runs find
them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from rtdecode.data.session import Behavior, Session, SessionError
from rtdecode.data.splits import Split, split_blocks, within_trials

__all__ = ["SessionPart", "check_joinable", "join_sessions", "session_parts", "split_parts", "windows_of_part"]

JOINED_SOURCE = "rtdecode.joined"


@dataclass(frozen=True)
class SessionPart:
    """One session inside a joined one.

    Attributes:
        name: the session's name (its file name without the suffix, made unique).
        offset: seconds added to the session's own times on the joined timeline.
        start, stop: its extent on the joined timeline.
        first_unit, n_units: its units are the joined vocabulary's indices first_unit .. first_unit + n_units - 1.
        unit_ids: its own unit IDs, in that order.
    """

    name: str
    offset: float
    start: float
    stop: float
    first_unit: int
    n_units: int
    unit_ids: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "unit_ids": list(self.unit_ids)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SessionPart:
        return cls(**{**d, "unit_ids": tuple(int(u) for u in d["unit_ids"])})


def check_joinable(sessions: Sequence[Session], names: Sequence[str]) -> None:
    """Sessions train one model only if they carry the same modalities: the same behavior variables (in the same
    units), video in all or none, of one frame size and rate. Raises SessionError naming the two sessions and
    what differs."""
    if len(sessions) < 2:
        raise SessionError(f"joining needs at least 2 sessions; got {len(sessions)}")
    first, name0 = sessions[0], names[0]
    for s, name in zip(sessions[1:], names[1:]):
        if sorted(s.behavior) != sorted(first.behavior):
            raise SessionError(
                f"{name} has behavior {sorted(s.behavior)} but {name0} has {sorted(first.behavior)}: multi-session "
                "training needs the same variables in every session (select them with --behavior, or drop a session)"
            )
        for b in first.behavior:
            if s.behavior[b].unit != first.behavior[b].unit:
                raise SessionError(
                    f"behavior {b!r} is in {s.behavior[b].unit!r} in {name} but {first.behavior[b].unit!r} in {name0}"
                )
        if (s.frames is None) != (first.frames is None):
            with_video = name0 if first.frames is not None else name
            raise SessionError(f"{with_video} has video and the other session does not ({name} vs {name0})")
        if s.frames is not None and first.frames is not None:
            if s.frames.shape[1:] != first.frames.shape[1:]:
                raise SessionError(
                    f"{name}'s frames are {s.frames.shape[1]} x {s.frames.shape[2]}, {name0}'s "
                    f"{first.frames.shape[1]} x {first.frames.shape[2]}: one model reads one frame size"
                )
            rate, rate0 = _frame_rate(s), _frame_rate(first)
            if abs(rate - rate0) > 0.01 * rate0:
                raise SessionError(f"{name}'s video runs at {rate:.3g} Hz, {name0}'s at {rate0:.3g} Hz")


def join_sessions(sessions: Sequence[Session], names: Sequence[str], gap: float) -> Session:
    """One Session holding `sessions` end to end, `gap` seconds apart (at least every window's context reach),
    each with its own units; its `metadata["sessions"]` lists the parts. Trials, when a session has them, are
    kept (on the joined timeline); truth arrays are dropped (they are per session)."""
    if len(names) != len(sessions):
        raise ValueError(f"one name per session: {len(names)} names for {len(sessions)} sessions")
    check_joinable(sessions, names)
    if len(set(names)) != len(names):
        raise SessionError(f"session names must be unique; got {list(names)}")
    if not gap > 0:
        raise ValueError(f"gap must be > 0 s; got {gap}")
    parts: list[SessionPart] = []
    cursor, first_unit = 0.0, 0
    for s, name in zip(sessions, names):
        offset = cursor - s.start
        parts.append(
            SessionPart(
                name=name,
                offset=offset,
                start=cursor,
                stop=cursor + s.duration,
                first_unit=first_unit,
                n_units=s.n_neurons,
                unit_ids=tuple(int(u) for u in np.asarray(s.neuron_ids)),
            )
        )
        cursor += s.duration + gap
        first_unit += s.n_neurons
    cat = np.concatenate
    frames = None
    frame_times = None
    if sessions[0].frames is not None:
        frames = cat([np.asarray(s.frames) for s in sessions])
        frame_times = cat([np.asarray(s.frame_times) + p.offset for s, p in zip(sessions, parts)])
    behavior = {
        b: Behavior(
            cat([s.behavior[b].times + p.offset for s, p in zip(sessions, parts)]),
            cat([s.behavior[b].values for s in sessions]),
            sessions[0].behavior[b].unit,
        )
        for b in sessions[0].behavior
    }
    with_trials = [s.trials + p.offset for s, p in zip(sessions, parts) if s.trials is not None]
    return Session(
        spike_times=cat([s.spike_times + p.offset for s, p in zip(sessions, parts)]),
        spike_neurons=cat([s.spike_neurons + p.first_unit for s, p in zip(sessions, parts)]),
        n_neurons=first_unit,
        start=0.0,
        stop=parts[-1].stop,
        frames=frames,
        frame_times=frame_times,
        behavior=behavior,
        trials=_trials(sessions, parts) if with_trials else None,
        metadata={"source": JOINED_SOURCE, "sessions": [p.to_dict() for p in parts]},
    )


def session_parts(session: Session) -> list[SessionPart] | None:
    """The parts of a joined session; None for any other session."""
    if session.metadata.get("source") != JOINED_SOURCE:
        return None
    return [SessionPart.from_dict(d) for d in session.metadata["sessions"]]


def windows_of_part(window_starts: np.ndarray, window: float, part: SessionPart) -> np.ndarray:
    """Indices of the windows lying wholly inside `part`."""
    eps = 1e-9
    return np.flatnonzero((window_starts >= part.start - eps) & (window_starts + window <= part.stop + eps))


def split_parts(
    window_starts: np.ndarray,
    window: float,
    parts: Sequence[SessionPart],
    *,
    n_blocks: int,
    fractions: tuple[float, float, float],
    gap: float,
    seed: int,
    trials: np.ndarray | None = None,
) -> Split:
    """Each part split into its own contiguous time blocks (as `split_blocks` splits one session), then joined:
    every session is in train, validation and test, and no window of one split reads another's data."""
    pieces: list[Split] = []
    for i, part in enumerate(parts):
        idx = windows_of_part(window_starts, window, part)
        if idx.size < n_blocks:
            raise SessionError(
                f"session {part.name} has {idx.size} windows, fewer than the split's {n_blocks} blocks; it is too "
                "short to train and test on"
            )
        local = split_blocks(window_starts[idx], window, n_blocks=n_blocks, fractions=fractions, gap=gap, seed=seed + i)
        if trials is not None:
            local = within_trials(local, window_starts[idx], window, trials)
        pieces.append(Split(*(idx[p] for p in (local.train, local.val, local.test))))
    return Split(*(np.concatenate([getattr(p, k) for p in pieces]) for k in ("train", "val", "test")))


def _frame_rate(s: Session) -> float:
    t = s.frame_times
    return float((t.size - 1) / (t[-1] - t[0])) if t is not None and t.size > 1 else 0.0


def _trials(sessions: Sequence[Session], parts: Sequence[SessionPart]) -> np.ndarray:
    """Every session's trials on the joined timeline; a session without trials counts as one trial (all of it)."""
    rows = [
        s.trials + p.offset if s.trials is not None else np.array([[p.start, p.stop]]) for s, p in zip(sessions, parts)
    ]
    return np.concatenate(rows)
