"""Tokenize once, store, memory-map: the on-disk form of a `TokenizedSession` that training reads.

A token store is a directory:

    tokens.json      format, version, window config, vocab (with neuron IDs), first_window, counts, source
    bins.npy         (S,) int64 global quanta in token order
    neurons.npy      (S,) int32 neuron indices
    window_ptr.npy   (n_windows + 1,) int64
    history_ptr.npy  (n_windows,) int64

Arrays are written first, each atomically, and `tokens.json` last: a directory without it is incomplete and is
refused. Loading memory-maps the arrays, so a dataset only slices and never loads the whole session.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from rtdecode.data.tokenizer import TokenizedSession, Vocab, WindowConfig
from rtdecode.io.atomic import atomic_write

FORMAT = "rtdecode-tokens"
FORMAT_VERSION = 1
_ARRAYS = ("bins", "neurons", "window_ptr", "history_ptr")

__all__ = ["save_tokens", "load_tokens"]


def save_tokens(
    tokens: TokenizedSession, directory: str | os.PathLike[str], source: dict[str, Any] | None = None
) -> Path:
    """Write `tokens` to `directory` (created if needed); return the path of its tokens.json."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    meta_path = d / "tokens.json"
    if meta_path.exists():
        meta_path.unlink()  # the directory is incomplete until the new arrays are all in place
    for name in _ARRAYS:
        with atomic_write(d / f"{name}.npy") as f:
            np.save(f, getattr(tokens, name), allow_pickle=False)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "window_config": tokens.config.to_dict(),
        "vocab": json.loads(tokens.vocab.to_json()),
        "first_window": tokens.first_window,
        "n_windows": tokens.n_windows,
        "n_spikes": int(tokens.bins.size),
        "truncation": tokens.truncation_stats() if tokens.config.has_budgets else None,  # None: derived at training
        "source": source or {},
    }
    with atomic_write(meta_path) as f:
        f.write(json.dumps(meta, indent=2).encode())
    return meta_path


def load_tokens(directory: str | os.PathLike[str], mmap: bool = True) -> TokenizedSession:
    """Open a token store; arrays are memory-mapped read-only unless `mmap=False`."""
    d = Path(directory)
    meta_path = d / "tokens.json"
    if not meta_path.exists():
        raise FileNotFoundError(
            f"{d}: no tokens.json; not a token store, or its writing was interrupted (run `rtdecode prepare` again)"
        )
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: not an rtdecode token store")
    if int(meta["format_version"]) > FORMAT_VERSION:
        raise ValueError(f"{meta_path}: token store version {meta['format_version']} is newer than this rtdecode")
    arrays = {n: np.load(d / f"{n}.npy", mmap_mode="r" if mmap else None, allow_pickle=False) for n in _ARRAYS}
    tokens = TokenizedSession(
        config=WindowConfig.from_dict(meta["window_config"]),
        vocab=Vocab.from_json(json.dumps(meta["vocab"])),
        first_window=int(meta["first_window"]),
        **arrays,
    )
    if tokens.n_windows != meta["n_windows"] or tokens.bins.size != meta["n_spikes"]:
        raise ValueError(f"{d}: arrays do not match tokens.json (n_windows/n_spikes); the store is corrupt")
    return tokens
