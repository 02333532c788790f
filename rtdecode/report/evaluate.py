"""`rtdecode evaluate`: every section of the report, computed on one session's held-out split, written to one folder.

Given a run, it exports a bundle into the report folder first (parity-checked), so decoding and generation are
scored on the artefact the daemon serves; given a bundle, the run it was exported from (manifest source.run) is used
for the sections that need PyTorch (connectivity, embeddings) when it exists and torch is installed.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.bench.figures import latency_histogram
from rtdecode.bench.model import percentiles
from rtdecode.core.config import RunConfig
from rtdecode.core.normalisation import Normalisation
from rtdecode.core.window_data import WindowData, make_split
from rtdecode.data.session import Session
from rtdecode.io import load_session
from rtdecode.report import figures
from rtdecode.report.decoding import decoding_scores
from rtdecode.report.document import Report, Section
from rtdecode.report.generation_section import generation_section
from rtdecode.report.run_sections import connectivity_section, embedding_section, stimulus_section
from rtdecode.runtime import Bundle, Decoder

__all__ = ["evaluate_report", "resolve_source"]


def resolve_source(source: Path, out: Path, session_path: Path, log: Callable[[str], None]) -> tuple[Path, Path | None]:
    """(bundle dir, run dir or None). A run is exported to <out>/bundle (parity-checked on held-out windows)."""
    if (source / "manifest.json").is_file():
        run = Path(Bundle.load(source).source.get("run", ""))
        return source, run if (run / "checkpoint.json").is_file() else None
    if not (source / "checkpoint.json").is_file():
        raise FileNotFoundError(f"{source} is neither a run (checkpoint.json) nor a bundle (manifest.json)")
    from rtdecode.export.onnx import export_bundle
    from rtdecode.training.checkpoint import read_meta

    cfg = RunConfig.from_saved(read_meta(source)["config"])
    data = WindowData(load_session(session_path), cfg)
    test = make_split(data, cfg).test
    log(f"exporting {source} -> {out / 'bundle'} (parity-checked) ...")
    export_bundle(source, out / "bundle", data=data, windows=test[:: max(1, test.size // 16)][:16], log=lambda _: None)
    return out / "bundle", source


def evaluate_report(
    source: Path,
    session_path: Path,
    out: Path,
    *,
    max_windows: int = 400,
    closed_loop_s: float = 60.0,
    latency_seconds: float = 20.0,
    latency_runs: dict[str, Any] | None = None,
    fewshot_dir: Path | None = None,
    connectivity_windows: int = 3000,
    seed: int = 0,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write <out>/report.html, report.json and the figures; returns the report's numbers."""
    out.mkdir(parents=True, exist_ok=True)
    bundle_dir, run_dir = resolve_source(Path(source), out, Path(session_path), log)
    session = load_session(session_path)
    decoder = Decoder(Bundle.load(bundle_dir))
    cfg = decoder.bundle.config
    if session.n_neurons != decoder.vocab.n_neurons:
        raise ValueError(
            f"{session_path} has {session.n_neurons} neurons but the model takes {decoder.vocab.n_neurons}"
        )
    norm = decoder.bundle.norm
    data = WindowData(session, cfg)
    split = make_split(data, cfg)
    runs = np.split(split.test, np.flatnonzero(np.diff(split.test) != 1) + 1)
    block = max(runs, key=len)
    report = Report(
        out,
        "rtdecode evaluation",
        {
            "session": str(session_path),
            "bundle": str(bundle_dir),
            "run": str(run_dir) if run_dir else "none",
            "neurons": session.n_neurons,
            "duration_s": session.duration,
            "test_windows": int(split.test.size),
        },
    )
    if any(t.kind in ("regression", "circular") for t in cfg.targets):
        _decoding(report.section("decoding", "Behavior decoding"), out, decoder, data, norm, split, block, seed, log)
    generation_section(
        report.section("generation", "Generation"),
        out,
        decoder,
        data,
        norm,
        split,
        block[:max_windows],
        block[: max(1, int(round(closed_loop_s / cfg.window.window)))],
        session,
        seed,
        log,
    )
    torch_ok = run_dir is not None and _has_torch()
    run = None
    if torch_ok:
        from rtdecode.training.checkpoint import LoadedRun

        run = LoadedRun(run_dir)
    sec = report.section("connectivity", "Connectivity from attention")
    if run is not None and {"W", "hubs", "community"} <= set(session.truth):
        connectivity_section(sec, out, run, session, connectivity_windows, log)
    else:
        sec.text("Not computed: needs the PyTorch run and a session with ground truth (`rtdecode simulate`).", "note")
    sec = report.section("stimulus", "Stimulus attention")
    if run is not None and run.config.frames.enabled and {"receptive_fields", "visual_neurons"} <= set(session.truth):
        stimulus_section(sec, out, run, session, connectivity_windows, log)
    else:
        sec.text(
            "Not computed: needs the PyTorch run of a model that takes video and a session with true receptive "
            "fields (`rtdecode simulate`).",
            "note",
        )
    sec = report.section("embedding", "Embeddings")
    if run is not None:
        embedding_section(sec, out, run, data, split, log)
    else:
        sec.text("Not computed: needs the PyTorch run this bundle was exported from.", "note")
    _fewshot(report.section("fewshot", "Few-shot decoding"), out, fewshot_dir)
    _latency(
        report.section("latency", "Serving latency"),
        out,
        bundle_dir,
        decoder.can_stream,
        session,
        float(data.tokens.window_starts()[block[0]]) if block.size else session.start,
        latency_runs,
        latency_seconds,
        log,
    )
    path = report.write()
    log(f"wrote {path} and {out / 'report.json'}")
    return report.numbers()


def _has_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def _decoding(
    sec: Section,
    out: Path,
    decoder: Decoder,
    data: WindowData,
    norm: Normalisation,
    split: Any,
    block: np.ndarray,
    seed: int,
    log: Callable[[str], None],
) -> None:
    names = [t.name for t in data.cfg.targets if t.kind in ("regression", "circular")]
    circular = [t.name for t in data.cfg.targets if t.kind == "circular"]
    pred: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for lo in range(0, split.test.size, 64):
        y = decoder.decode(data.batch(split.test[lo : lo + 64], norm))
        for n in names:
            pred[n].append(y[n])
    scores, preds = decoding_scores(
        data.tokens, data.targets, split, {n: np.concatenate(v) for n, v in pred.items()}, seed, circular
    )
    sec.numbers.update({"windows": int(split.test.size), "variables": scores})
    sec.text(
        f"{split.test.size} held-out windows; baselines fitted on the same training windows, penalties and early "
        "stopping on the validation windows. Shuffle: ridge fitted on training labels rolled in time (chance level)."
    )
    methods = list(next(iter(scores.values())))
    if linear := [n for n in names if n not in circular]:
        sec.table(
            ["variable", *(f"{m} r" for m in methods), *(f"{m} R²" for m in methods)],
            [[n, *(scores[n][m]["r"] for m in methods), *(scores[n][m]["r2"] for m in methods)] for n in linear],
        )
    if circular:
        sec.text(
            "Angles (radians): every method decodes (cos, sin) and takes atan2; r is the mean Pearson r of cos and "
            "sin, MAE the mean absolute angular error."
        )
        sec.table(
            ["angle", *(f"{m} r (cos, sin)" for m in methods), *(f"{m} MAE (°)" for m in methods)],
            [[n, *(scores[n][m]["r"] for m in methods), *(scores[n][m]["mae_deg"] for m in methods)] for n in circular],
        )
    pos = np.searchsorted(split.test, block[: int(round(60 / data.cfg.window.window))])
    t = data.tokens.window_starts()[split.test[pos]]
    traces = {
        n: {"true": data.targets[n][split.test[pos]], **{m: p[pos] for m, p in preds[n].items() if m != "shuffle"}}
        for n in names
    }
    figures.decoding_figure(t - t[0], traces, scores, out / "decoding.png")
    sec.figure(
        out, "decoding.png", "True vs decoded behavior on a held-out stretch (up to 60 s), and Pearson r per method."
    )
    log(
        "decoding: "
        + ", ".join(
            f"{n} r {scores[n]['model']['r']:.3f} (ridge {scores[n]['ridge']['r']:.3f}, "
            f"mlp {scores[n]['mlp']['r']:.3f}, shuffle {scores[n]['shuffle']['r']:.3f})"
            + (
                f", MAE {scores[n]['model']['mae_deg']:.1f}° (ridge {scores[n]['ridge']['mae_deg']:.1f}°)"
                if n in circular
                else ""
            )
            for n in names
        )
    )


def _fewshot(sec: Section, out: Path, fewshot_dir: Path | None) -> None:
    result = fewshot_dir / "fewshot.json" if fewshot_dir else None
    if fewshot_dir is None or result is None or not result.is_file():
        sec.text("Not included: run `python tools/fewshot_curve.py --out DIR` and pass `--fewshot DIR`.", "note")
        return
    data = json.loads(result.read_text())
    rows = data["rows"]
    names = sorted({k.split("_", 1)[1][:-2] for r in rows for k in r if k.startswith("pretrained_")})
    sec.numbers.update(data)
    sec.table(
        ["labelled", *(f"{n} {kind}" for n in names for kind in ("pretrained", "scratch"))],
        [
            [f"{r['fraction']:.0%}", *(r[f"{kind}_{n}_r"] for n in names for kind in ("pretrained", "scratch"))]
            for r in rows
        ],
    )
    if (fewshot_dir / "fewshot.png").is_file():
        shutil.copyfile(fewshot_dir / "fewshot.png", out / "fewshot.png")
        sec.figure(
            out, "fewshot.png", "Held-out r after fine-tuning on a fraction of labelled windows: pretrained vs scratch."
        )


def _latency(
    sec: Section,
    out: Path,
    bundle_dir: Path,
    can_stream: bool,
    session: Session,
    start: float,
    runs: dict[str, Any] | None,
    seconds: float,
    log: Callable[[str], None],
) -> None:
    if runs is None and seconds > 0:
        from rtdecode.bench.serve import bench_serve

        piece = session.slice_time(start, min(session.stop, start + seconds))
        log(f"latency: serving {piece.duration:.0f} s at real time through the daemon ...")
        modes = ("window", "streaming") if can_stream else ("window",)
        runs = bench_serve(
            bundle_dir, piece, speeds=(1.0,), threads=1, modes=modes, out_dir=out / "latency", log=lambda _: None
        )["runs"]
    if not runs:
        sec.text("Not measured (--latency-seconds 0).", "note")
        return
    rows = []
    for name, run in runs.items():
        lat = percentiles(np.asarray(run["raw_ms"])) if "latency_ms" not in run else run["latency_ms"]
        run["latency_ms"] = lat
        sec.numbers[name] = {
            "windows": len(run["raw_ms"]),
            "latency_ms": lat,
            "deadline_misses": run.get("deadline_misses"),
            **({"post_close_ms": run["post_close_ms"]} if "post_close_ms" in run else {}),
        }
        rows.append([name.replace("_", " "), len(run["raw_ms"]), lat["p50"], lat["p99"], lat["p99.9"], lat["max"]])
    sec.text(
        "End to end: producer send -> decode received by a subscriber, over ZeroMQ on this machine. 'streaming' "
        "runs stream each window through the model while it is open (the default when the bundle allows)."
    )
    sec.table(["run", "windows", "p50 (ms)", "p99 (ms)", "p99.9 (ms)", "max (ms)"], rows)
    latency_histogram(runs, out / "latency.png")
    sec.figure(out, "latency.png", "End-to-end latency per window, log-binned, with p50/p99/p99.9.")
