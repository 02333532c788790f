"""The report's generation section: teacher-forced and closed-loop generation against the recording and the
baselines (`rtdecode.report.generation` computes; this renders tables and figures)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.core.config import RunConfig
from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData
from rtdecode.data.session import Session
from rtdecode.report import figures
from rtdecode.report.document import Section
from rtdecode.report.generation import (
    UNSEEN_REDRAWN,
    baseline_windows,
    closed_loop_stability,
    fit_baselines,
    generate_closed_loop,
    generate_windows,
    generation_scores,
    generation_targets,
    repeat_trial_windows,
)
from rtdecode.runtime import Decoder

__all__ = ["generation_section", "unread_behavior_note"]

UNSEEN_NAMES = {"behavior": "the behavior (decoded, never an input)", "community": "the hub schedule"}


def generation_section(
    sec: Section,
    out: Path,
    decoder: Decoder,
    data: WindowData,
    norm: Normalisation,
    split: Any,
    windows: np.ndarray,
    loop_windows: np.ndarray,
    session: Session,
    seed: int,
    log: Callable[[str], None],
) -> None:
    tokens, win_s = data.tokens, data.cfg.window.window
    baselines = fit_baselines(tokens, split.train)
    forced = {"generated": generate_windows(decoder, data, norm, windows, seed=seed)}
    forced.update(baseline_windows(baselines, tokens, windows, closed_loop=False, seed=seed))
    looped = {"generated": generate_closed_loop(decoder, data, norm, loop_windows, seed=seed)}
    looped.update(baseline_windows(baselines, tokens, loop_windows, closed_loop=True, seed=seed))
    both = np.union1d(windows, loop_windows)
    # what the model is never given, drawn afresh: the hub schedule, and the behavior unless it is an input
    unseen = ("community",) if data.cfg.inputs else ("behavior", "community")
    repeat = repeat_trial_windows(session, tokens, both)
    if repeat is not None:  # a second trial of the simulated circuit: the ceiling of every score
        where = {int(w): i for i, w in enumerate(both)}
        forced["repeat trial"] = [repeat[where[int(w)]] for w in windows]
        looped["repeat trial"] = [repeat[where[int(w)]] for w in loop_windows]
        log(f"scored a repeat trial of the simulated circuit ({both.size} windows) as the ceiling")
        redrawn = repeat_trial_windows(session, tokens, loop_windows, redraw=unseen)
        if redrawn is not None:
            looped[UNSEEN_REDRAWN] = redrawn
            log(f"scored a repeat trial with {' and '.join(unseen)} redrawn as the closed loop's ceiling")
    scores, arrays = generation_scores(tokens, windows, forced)
    loop_scores, loop_arrays = generation_scores(tokens, loop_windows, looped)
    loop_scores["stability"] = closed_loop_stability(
        loop_arrays["population"]["generated"], loop_arrays["population"]["true"], win_s
    )
    targets = generation_targets(scores, loop_scores)
    sec.numbers.update(scores)
    sec.numbers["closed_loop"] = loop_scores
    sec.numbers["targets"] = targets
    sec.text(
        f"Teacher-forced: {windows.size} consecutive held-out windows, each generated from the recorded previous "
        f"window. Closed loop: {loop_windows.size} consecutive held-out windows ({loop_windows.size * win_s:.0f} s), "
        "each generated from the windows generated before it. Temperature 1, nucleus 0.95, frames and behavior "
        "inputs as recorded. Baselines generated the same two ways: Poisson at each neuron's training rate, and a "
        "GLM (counts linear in the previous window's counts, ridge-fitted on the training windows, Poisson sampled). "
        f"The population rate is compared per window and summed over {scores['slow_bin_s']:g}-s bins: a window's "
        "count is dominated by spike-count noise, a bin's by the slow causes (behavior, hub schedule)."
        + (
            " Repeat trial (simulated sessions): the same windows of a second run of the circuit with the same "
            "stimulus, behavior and hub schedule, the spikes drawn afresh: the recording's own variability, the "
            "ceiling of every score. Closed loop only, repeat trial with the unseen causes redrawn: a third run "
            f"with {' and '.join(UNSEEN_NAMES[u] for u in unseen)} drawn afresh (nothing the model reads gives "
            "them): what a loop that has forgotten its start can reach."
            if repeat is not None
            else ""
        )
    )
    note = unread_behavior_note(data.cfg, session)
    if note:
        sec.text(note, "note")
    keys = [
        ("set_f1", "set F1"),
        ("rate_correlation", "per-neuron rate r"),
        ("population_rate_correlation", "population rate r"),
        ("population_rate_correlation_slow", f"population rate r, {scores['slow_bin_s']:g}-s bins"),
        ("pairwise_correlation_similarity", "pairwise correlation similarity r"),
        ("spikes_per_window", "spikes / window"),
        ("capped_fraction", "windows at token cap"),
        ("fano_median", "Fano factor, median"),
        ("fano_ks", "Fano KS distance"),
        ("isi_median_ms", "ISI median (ms)"),
        ("isi_ks", "ISI KS distance"),
    ]
    for mode, sc in (("teacher-forced", scores), ("closed loop", loop_scores)):
        t = sc["true"]
        sec.table(
            ["source", *(label for _, label in keys)],
            [
                [f"{mode}: {k}", *(sc[k][m] for m, _ in keys)]
                for k in ("generated", "glm", "poisson", "repeat trial", UNSEEN_REDRAWN)
                if k in sc
            ]
            + [
                [
                    f"{mode}: recording",
                    *([""] * 5),  # set F1, per-neuron rate, both population rates, pairwise: against itself
                    t["spikes_per_window"],
                    t["capped_fraction"],
                    t["fano_median"],
                    "",
                    t["isi_median_ms"],
                    "",
                ]
            ],
        )
    st = loop_scores["stability"]
    sec.table(
        ["closed loop", "first 10 s rate / recorded", "last 10 s rate / recorded", "silent windows", "recorded silent"],
        [
            [
                "generated",
                st["rate_ratio_first"],
                st["rate_ratio_last"],
                st["silent_fraction"],
                st["recorded_silent_fraction"],
            ]
        ],
    )
    sec.table(
        ["target", "value", "bar", "met", "repeat trial (ceiling)", "unseen causes redrawn"],
        [
            [
                name,
                v["value"],
                v["bar"],
                "met" if v["met"] else "NOT met",
                v.get("ceiling", ""),
                v.get("ceiling_unseen_redrawn", ""),
            ]
            for name, v in targets.items()
        ],
    )
    community = session.truth.get("community")
    rate = arrays["per_neuron"]["true"]
    order = np.lexsort((-rate, community)) if community is not None else np.argsort(-rate)
    figures.generation_figure(
        arrays["rasters"], order, arrays["rate_t"], arrays["population"], arrays["per_neuron"], out / "generation.png"
    )
    sec.figure(
        out,
        "generation.png",
        "Teacher-forced. Top: 2 s of recorded, generated, GLM and Poisson activity. Bottom: population rate "
        "over the held-out stretch (PSTH over time), and per-neuron rates against the recorded ones.",
    )
    figures.generation_figure(
        loop_arrays["rasters"],
        order,
        loop_arrays["rate_t"],
        loop_arrays["population"],
        loop_arrays["per_neuron"],
        out / "generation_closed_loop.png",
    )
    sec.figure(
        out,
        "generation_closed_loop.png",
        "Closed loop: each window generated from the generated ones before it (the GLM from its own samples).",
    )
    g, p, gl = scores["generated"], scores["poisson"], loop_scores["generated"]
    log(
        f"generation: set F1 {g['set_f1']:.3f} vs Poisson {p['set_f1']:.3f}; rate r {g['rate_correlation']:.3f}; "
        f"population rate r {g['population_rate_correlation']:.3f} teacher-forced, "
        f"{gl['population_rate_correlation']:.3f} closed loop (last 10 s at {st['rate_ratio_last']:.2f}x the "
        f"recorded rate); targets met {sum(v['met'] for v in targets.values())} of {len(targets)}"
    )


def unread_behavior_note(cfg: RunConfig, session: Session) -> str | None:
    """Why a closed loop of a model that decodes behavior it does not read (the demo's) cannot follow the
    recording, and what to train instead; None when the model reads all of the session's behavior, decodes no
    behavior (a spikes-only model: nothing to point it to), or the session has none."""
    unread = sorted(set(session.behavior) - {b.name for b in cfg.inputs})
    if not unread or not cfg.targets:
        return None
    return (
        f"This model does not read {', '.join(unread)}: a closed loop runs without the behavior that drives part of "
        "the activity, and cannot follow the recording where it does. A model that reads the behavior as it reads "
        "the frames: `rtdecode train --config small_behavior_input`, then `rtdecode evaluate` on its run."
    )
