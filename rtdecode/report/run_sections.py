"""The report sections that need the PyTorch run, not only the bundle: connectivity from attention maps, stimulus
attention maps and the contrastive embeddings (`rtdecode evaluate`, `rtdecode connectivity`, `rtdecode stimulus`,
`rtdecode embed`). torch is imported inside
each, so the rest of the report runs without it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.core.connectivity import (
    JUDGED_READING,
    UNCORRECTED_BASELINES,
    meets_auprc_bar,
    meets_bar,
    meets_stimulus_bar,
    score_against_truth,
)
from rtdecode.core.receptive_fields import patch_energy, score_maps, spike_triggered_average
from rtdecode.core.window_data import WindowData, evenly_spaced, make_split
from rtdecode.data.session import Session
from rtdecode.report import figures
from rtdecode.report.document import Section
from rtdecode.report.embedding import linear_decodability, pca_projection, save_latents

__all__ = ["connectivity_section", "embedding_section", "stimulus_section"]


def connectivity_section(
    sec: Section, out: Path, run: Any, session: Session, windows: int, log: Callable[[str], None]
) -> None:
    """Also the body of `rtdecode connectivity`: matrices, scores on both edge sets, the bar, the figure."""
    from rtdecode.training.connectivity import connectivity_matrices

    matrices = connectivity_matrices(run, session, windows)
    scores = {name: score_against_truth(m, session.truth) for name, m in matrices.items()}
    judged = JUDGED_READING  # connectivity_matrices always reads it
    bar = meets_bar(scores, judged)
    readings = [name for name in scores if name.startswith("attention")]
    auprc_bars = {
        name: {
            "uncorrected baselines": meets_auprc_bar(scores, name, baselines=UNCORRECTED_BASELINES),
            "all directed baselines": meets_auprc_bar(scores, name),
        }
        for name in readings
    }
    auprc_bar = auprc_bars[judged]["all directed baselines"]
    # the visual-edge bar asks whether seeing the stimulus lets attention tell its drive from an edge
    sees_frames = bool(run.config.frames.enabled)
    stimulus_bar = meets_stimulus_bar(scores, judged) if sees_frames else None
    visual_bar_uncorrected = meets_stimulus_bar(scores, judged, UNCORRECTED_BASELINES) if sees_frames else None
    sec.numbers.update(
        {
            "windows": windows,
            "judged_reading": judged,
            "scores": scores,
            "bar": bar,
            "auprc_bar": auprc_bar,
            "auprc_bar_uncorrected": auprc_bars[judged]["uncorrected baselines"],
            "auprc_bar_by_reading": auprc_bars,
            "stimulus_bar": stimulus_bar,
            "stimulus_bar_uncorrected": visual_bar_uncorrected,
            "sees_frames": sees_frames,
            "spikes_only_model": not (run.config.frames.enabled or run.config.behavior),
        }
    )
    if run.config.behavior:
        sec.text(
            "This model also decodes or reads behavior, which explains much of each neuron's activity; the bars are "
            "meant for a model that learns only the spikes (`rtdecode train --config spikes_only`, or "
            "`spikes_frames` to see the stimulus too, then `rtdecode connectivity`).",
            "note",
        )
    if not sees_frames and "visual" in scores[judged]:
        sec.text(
            "This model does not see the frames: the bar on the weights into the visual neurons is for one that "
            "does (config `spikes_frames`).",
            "note",
        )
    sec.text(
        "attention: each spike's attention to spikes of earlier time bins, keyed by the later spike's neuron; "
        "attention (predicted): each position's attention keyed by the neuron of the spike it predicts (the "
        "paper's reading); attention (lag contrast): by spike, the attention to spikes one bin earlier less that to "
        "spikes further back, clipped at zero (slow co-modulation draws attention at every lag, a synapse mostly at "
        "the first); attention (gradient-weighted): keyed as the predicted reading, each weight times the gradient "
        "of the window's next-spike log-likelihood with respect to it, positive part (the attention the "
        "predictions rest on). All averaged over heads and layers and divided by how often each pair occurred; "
        f"the bars judge {judged}, and the AUPRC bar is also given for each reading. The slow-corrected "
        "cross-correlogram subtracts from the 1-5 ms count its mean over the same window moved 15, 20, 25 and 30 "
        "ms later."
    )
    np.savez(out / "connectivity.npz", **{k.replace(" ", "_"): v for k, v in matrices.items()}, W=session.truth["W"])
    for edges, label in (
        ("hub_circuit", "hub circuit (hub -> community targets)"),
        ("all_weights", "all non-zero weights"),
        ("visual", "non-zero weights into the visual neurons (which the stimulus drives together)"),
    ):
        if edges not in scores[judged]:
            continue
        sec.text(f"True edges: {label}.")
        sec.table(
            ["matrix", "AUROC", "AUPRC", "hubs found", "direction index"],
            [
                [
                    name,
                    s[edges]["auroc"],
                    s[edges]["auprc"],
                    f"{s[edges]['hubs_found']}/{s[edges]['hubs_total']}",
                    s[edges]["direction_index"],
                ]
                for name, s in scores.items()
            ],
        )
    verdict = "met" if bar["met"] else "NOT met (" + ", ".join(k for k, v in bar.items() if k != "met" and not v) + ")"
    sec.text(
        f"Bar ({judged}, hub circuit: AUROC >= 0.85, hubs found, direction index > 1, AUROC above every "
        f"baseline): {verdict}.",
        "verdict-ok" if bar["met"] else "verdict-no",
    )
    ok = auprc_bar["met"]
    sec.text(
        f"Bar ({judged}, hub circuit: AUPRC within 0.05 of the best directed baseline, {auprc_bar['best_baseline']}, and a "
        f"direction index at least its): {'met' if ok else 'NOT met (' + ', '.join(k for k in ('auprc', 'direction') if not auprc_bar[k]) + ')'}.",
        "verdict-ok" if ok else "verdict-no",
    )
    sec.table(
        ["reading", "AUPRC bar vs lagged correlation and cross-correlogram", "vs those and the slow-corrected one"],
        [
            [name, _bar_cell(bars["uncorrected baselines"]), _bar_cell(bars["all directed baselines"])]
            for name, bars in auprc_bars.items()
        ],
    )
    for visual_bar, against in (
        (sec.numbers["stimulus_bar_uncorrected"], "the lagged correlation and the cross-correlogram"),
        (stimulus_bar, "every baseline"),
    ):
        if visual_bar is None:
            continue
        ok = visual_bar["met"]
        sec.text(
            f"Bar ({judged}, weights into the visual neurons: AUPRC above {against}; for a model that sees the "
            f"frames): {'met' if ok else 'NOT met'} ({visual_bar['auprc']:.3f} vs {visual_bar['best_auprc']:.3f}, "
            f"{visual_bar['best_baseline']}).",
            "verdict-ok" if ok else "verdict-no",
        )
    figures.connectivity_figure(session.truth["W"], matrices, out / "connectivity.png")
    sec.figure(out, "connectivity.png", "True W and the inferred target x source matrices (diagonal blanked).")
    a = scores[judged]["hub_circuit"]
    log(
        f"connectivity (hub circuit): {judged} AUROC {a['auroc']:.3f}, AUPRC {a['auprc']:.3f}, hubs "
        f"{a['hubs_found']}/{a['hubs_total']}, direction {a['direction_index']:.2f}; AUROC bar {verdict}; AUPRC bar "
        f"{'met' if auprc_bar['met'] else 'NOT met'} (best baseline {auprc_bar['best_baseline']})"
    )


def _bar_cell(bar: dict[str, Any]) -> str:
    """One AUPRC-bar verdict as a table cell: met, or which check failed, and against which baseline."""
    failed = [k for k in ("auprc", "direction") if not bar[k]]
    return f"{'met' if bar['met'] else 'NOT met (' + ', '.join(failed) + ')'} vs {bar['best_baseline']}"


def embedding_section(
    sec: Section, out: Path, run: Any, data: WindowData, split: Any, log: Callable[[str], None]
) -> None:
    from rtdecode.training.embed import window_latents

    parts = {
        "train": split.train[np.linspace(0, split.train.size - 1, min(3000, split.train.size)).astype(np.int64)],
        "val": split.val,
        "test": split.test,
    }
    latents, kind = {}, "pooled"
    for k, w in parts.items():
        latents[k], kind = window_latents(run.model, data, w, run.norm)
    windows = np.concatenate(list(parts.values()))
    labels = np.concatenate([np.full(w.size, k) for k, w in parts.items()])
    behavior = {t.name: data.targets[t.name][windows] for t in data.cfg.targets}
    save_latents(
        out / "latents.npz",
        windows,
        data.tokens.window_starts()[windows],
        np.concatenate(list(latents.values())),
        kind,
        labels,
        behavior,
    )
    sec.numbers.update({"kind": kind, "dim": int(latents["test"].shape[1]), "windows": int(windows.size)})
    sec.text(f"{kind} latents ({latents['test'].shape[1]}-d) of {windows.size} windows in latents.npz.")
    projection, explained = pca_projection(latents["train"], latents["test"])
    sec.numbers["pca_explained"] = explained.tolist()
    speed_name = "speed" if "speed" in behavior else next(iter(behavior), None)
    if speed_name is None:
        sec.text("The model decodes no behavior: no projection colouring or decodability score.", "note")
        return
    score = linear_decodability(latents, {k: data.targets[speed_name][w] for k, w in parts.items()})
    sec.numbers["decodability"] = {speed_name: score}
    sec.table(["variable", "linear r from latent", "R²"], [[speed_name, score["r"], score["r2"]]])
    figures.embedding_figure(projection, data.targets[speed_name][split.test], out / "embedding.png")
    sec.figure(
        out,
        "embedding.png",
        f"Test-window latents on the first 3 principal axes of the training latents, coloured by {speed_name}.",
    )
    log(f"embedding: {kind} latents, linear {speed_name} r {score['r']:.3f}")


INPUT_GRADIENT = "input gradient (not attention)"


def stimulus_section(
    sec: Section,
    out: Path,
    run: Any,
    session: Session,
    windows: int,
    log: Callable[[str], None],
) -> None:
    """Also the body of `rtdecode stimulus`: each visual neuron's stimulus attention map and spike-triggered
    average, scored against its true receptive field on the model's patch grid (`rtdecode.core.receptive_fields`)."""
    from rtdecode.training.stimulus import input_gradient_maps, stimulus_attention

    cfg = run.config
    data = WindowData(session, cfg)
    train = make_split(data, cfg).train
    pick = evenly_spaced(train, windows)
    gradient, counts = stimulus_attention(run.model, data, pick, run.norm, method="gradient")
    attention, _ = stimulus_attention(run.model, data, pick, run.norm, method="attention")
    visual = np.asarray(session.truth["visual_neurons"], np.int64)
    sensitivity, _ = input_gradient_maps(run.model, data, pick, run.norm, visual)
    patch = tuple(cfg.model.frame_patch[1:])
    truth = patch_energy(np.asarray(session.truth["receptive_fields"]), patch)
    # the spikes of the same windows, for the spike-triggered average
    starts = data.tokens.window_starts()
    w = np.searchsorted(starts, session.spike_times, side="right") - 1
    chosen = np.zeros(starts.size + 1, bool)
    chosen[pick] = True
    inside = (
        (w >= 0) & chosen[np.clip(w, 0, None)] & (session.spike_times < starts[np.clip(w, 0, None)] + cfg.window.window)
    )
    assert session.frames is not None and session.frame_times is not None  # the model takes video
    sta, sta_counts = spike_triggered_average(
        session.frames, session.frame_times, session.spike_times[inside], session.spike_neurons[inside], visual
    )
    scores = {
        "gradient-weighted attention": score_maps(gradient[visual], truth),
        "attention": score_maps(attention[visual], truth),
        "spike-triggered average": score_maps(patch_energy(sta, patch), truth),
        INPUT_GRADIENT: score_maps(sensitivity, truth),
    }
    best = scores["gradient-weighted attention"]["median_r"]
    met = best > scores["spike-triggered average"]["median_r"]
    sec.numbers.update(
        {
            "method": "gradient-weighted frame cross-attention (relu(weight x gradient of the recorded next "
            "neurons' log-probability), mean over heads and blocks), keyed by the predicted neuron; raw attention "
            "beside it",
            "windows": int(pick.size),
            "visual_neurons": visual.tolist(),
            "spikes_per_neuron": counts[visual].tolist(),
            "scores": scores,
            "bar": {"attention_above_sta": bool(met)},
        }
    )
    sec.text(
        "Where the model looks when it predicts each visual neuron's spikes: gradient-weighted frame cross-attention "
        "(the positive part of each attention weight times the gradient of the recorded next neurons' "
        "log-probability, mean over heads and blocks, keyed by the predicted neuron), raw attention and the "
        "spike-triggered average of the same windows' frames; each scored as Pearson r with the true receptive "
        "field's energy on the model's patch grid. The input gradient is no attention map: the squared gradient of "
        "each neuron's recorded spikes' log-probability with respect to the frames' pixels, per patch (32 of the "
        "windows in which it fires). It asks whether the model holds the fields at all; where it does not follow "
        "them, no attention map can."
    )
    sec.table(
        ["map", "median r with the true field", "neurons"],
        [[name, s["median_r"], visual.size] for name, s in scores.items()],
    )
    verdict = "met" if met else "NOT met"
    sec.text(
        f"Bar (median r of gradient-weighted attention above the spike-triggered average's): {verdict}.",
        "verdict-ok" if met else "verdict-no",
    )
    order = np.argsort(-counts[visual])[:4]
    figures.stimulus_figure(
        truth[order], gradient[visual][order], patch_energy(sta[order], patch), visual[order], out / "stimulus.png"
    )
    sec.figure(
        out,
        "stimulus.png",
        "True receptive-field energy, gradient-weighted stimulus attention and spike-triggered average "
        "(patch grid) of the visual neurons with the most spikes.",
    )
    log(
        f"stimulus attention: median r {best:.3f} gradient-weighted ({scores['attention']['median_r']:.3f} raw) vs "
        f"spike-triggered average "
        f"{scores['spike-triggered average']['median_r']:.3f} ({visual.size} visual neurons); bar {verdict}; "
        f"the model's input gradient {scores[INPUT_GRADIENT]['median_r']:.3f}"
    )
