"""The science targets of a report in one list: what `rtdecode demo` prints at the end, so a user sees which of
the paper's claims this run meets without opening the report."""

from __future__ import annotations

from typing import Any

__all__ = ["science_targets"]


def science_targets(numbers: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per target in `numbers` (evaluate_report's return): {target, value, bar, met}; the value is text,
    rounded as the report shows it. Sections a report did not compute are left out."""
    rows: list[dict[str, Any]] = []
    for name, t in numbers.get("generation", {}).get("targets", {}).items():
        ceilings = [
            f"{label} {t[key]:.3f}"
            for key, label in (("ceiling", "repeat trial"), ("ceiling_unseen_redrawn", "unseen causes redrawn"))
            if key in t
        ]
        value = f"{t['value']:.3f}" + (f" ({'; '.join(ceilings)})" if ceilings else "")
        rows.append({"target": f"generation, {name}", "value": value, "bar": t["bar"], "met": bool(t["met"])})
    conn = numbers.get("connectivity", {})
    if "scores" in conn:
        judged = conn.get("judged_reading", "attention")
        a = conn["scores"][judged]["hub_circuit"]
        plain = "the lagged correlation and the 1-5 ms cross-correlogram"
        # (report.json key suffix, which baselines, the bars' wording): the two plain baselines, then every one
        sets = (
            ("_uncorrected", f"vs {plain}", f"of {plain}", f"above the best of {plain}"),
            ("", "vs every baseline", "of those and the slow-corrected cross-correlogram", "above every baseline"),
        )
        for suffix, versus, best_of, _ in sets:
            auprc = conn.get(f"auprc_bar{suffix}")
            if auprc is None:
                continue
            best = conn["scores"][auprc["best_baseline"]]["hub_circuit"]
            rows.append(
                {
                    "target": f"connectivity, hub circuit: {judged} AUPRC and direction index, {versus}",
                    "value": f"{a['auprc']:.3f}, {a['direction_index']:.2f} ({auprc['best_baseline']} "
                    f"{best['auprc']:.3f}, {best['direction_index']:.2f})",
                    "bar": f"AUPRC within 0.05 of the best {best_of}, direction index at least its",
                    "met": bool(auprc["met"]),
                }
            )
        for suffix, versus, _, above in sets:
            visual = conn.get(f"stimulus_bar{suffix}")
            if visual is None:
                continue
            rows.append(
                {
                    "target": f"connectivity, weights into the visual neurons: {judged} AUPRC, {versus}",
                    "value": f"{visual['auprc']:.3f} ({visual['best_baseline']} {visual['best_auprc']:.3f})",
                    "bar": above,
                    "met": bool(visual["met"]),
                }
            )
    stim = numbers.get("stimulus", {})
    if "scores" in stim:
        s = stim["scores"]
        rows.append(
            {
                "target": "stimulus attention: median r with the true fields",
                "value": f"{s['gradient-weighted attention']['median_r']:.3f} (spike-triggered average "
                f"{s['spike-triggered average']['median_r']:.3f})",
                "bar": "above the spike-triggered average",
                "met": bool(stim["bar"]["attention_above_sta"]),
            }
        )
    return rows
