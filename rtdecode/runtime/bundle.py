"""A model bundle on disk: manifest.json + ONNX graphs, validated before anything is allocated.

The manifest is the contract between `rtdecode export` and everything that serves: run config, vocabulary
(with the neuron ID map), normalisation, graph I/O and cache sizes. Loading checks the format version, the
required fields and their types, and (by default) every graph file's sha256, so a bundle that was truncated,
edited or mixed with another is refused with a message saying what is wrong. What it returns is typed
(`rtdecode.core`): serving code reads `bundle.config`, `bundle.norm` and `bundle.cache`, never raw manifest keys.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rtdecode.core.config import BehaviorSpec, FramesConfig, RunConfig
from rtdecode.core.normalisation import Normalisation
from rtdecode.data.tokenizer import Vocab, WindowConfig

FORMAT = "rtdecode-bundle"
FORMAT_VERSION = 1
GRAPHS = ("decode", "context", "step")  # "decode" only for a model with behavior targets (`required_graphs`)
OPTIONAL_GRAPHS = ("stream",)  # streaming decode; bundles exported before it decode window at a time
# The stream graph's interface (`rtdecode.runtime.streaming`): per-call token mask, the running pooled sum of the
# heads ("hidden_before") in, per-block new keys/values out. Export writes it as graphs.stream.version; a bundle
# with another version decodes window at a time until re-exported.
STREAM_GRAPH_VERSION = 1
ALLOWED_DTYPES = {"int64", "float32", "float16", "bool", "int32"}
MAX_MANIFEST_BYTES = 4 << 20  # a real manifest is ~20 kB (the neuron ID map dominates); read nothing bigger
MAX_CACHE_BYTES = 4 << 30  # K + V for one window at float32; the release model needs ~10 MB
MAX_NEURONS = 1 << 20
MAX_BLOCK = 1 << 16

__all__ = [
    "Bundle",
    "BundleError",
    "CacheShape",
    "FORMAT",
    "FORMAT_VERSION",
    "STREAM_GRAPH_VERSION",
    "required_graphs",
    "sha256",
]


class BundleError(ValueError):
    """The bundle is missing, incomplete, corrupt or from an incompatible rtdecode."""


@dataclass(frozen=True)
class CacheShape:
    """The generation cache the step graph takes: (layers, batch, heads, slots, head_dim) float32 keys and values."""

    layers: int
    heads: int
    head_dim: int
    slots: int


@dataclass(frozen=True)
class Bundle:
    """A validated bundle. `manifest` is kept for provenance (source run, parity figures); read the typed fields."""

    path: Path
    manifest: dict[str, Any]
    config: RunConfig
    norm: Normalisation
    vocab: Vocab
    cache: CacheShape

    @classmethod
    def load(cls, path: str | Path, verify_hashes: bool = True) -> Bundle:
        path = Path(path)
        mpath = path / "manifest.json"
        if not mpath.exists():
            raise BundleError(
                f"{path}: no manifest.json (make a bundle with `rtdecode export --from RUN --out {path}`)"
            )
        size = mpath.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise BundleError(
                f"{mpath}: {size:,} bytes; a manifest is at most {MAX_MANIFEST_BYTES:,} (refusing to read it)"
            )
        try:
            m = json.loads(mpath.read_text())
        except json.JSONDecodeError as e:
            raise BundleError(f"{mpath}: not valid JSON ({e})") from e
        if not isinstance(m, dict) or m.get("format") != FORMAT:
            raise BundleError(f"{mpath}: not an rtdecode bundle manifest")
        if not isinstance(m.get("format_version"), int) or m["format_version"] > FORMAT_VERSION:
            raise BundleError(
                f"{mpath}: bundle format {m.get('format_version')} is not readable by this rtdecode "
                f"(reads up to {FORMAT_VERSION}); upgrade rtdecode or re-export"
            )
        for key, typ in (("config", dict), ("vocab", dict), ("normalisation", dict), ("graphs", dict), ("cache", dict)):
            if not isinstance(m.get(key), typ):
                raise BundleError(f"{mpath}: field '{key}' missing or not a {typ.__name__}")
        try:
            config = RunConfig.from_saved(m["config"])
            norm = Normalisation.from_dict(m["normalisation"])
            vocab = Vocab.from_json(json.dumps(m["vocab"]))
        except (KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{mpath}: invalid run config, normalisation or vocabulary ({e})") from e
        window = config.window
        if missing := {b.name for b in config.behavior} - set(norm.behavior):
            raise BundleError(f"{mpath}: no normalisation for behavior {sorted(missing)}")
        if len(vocab.neuron_ids) != vocab.n_neurons:
            raise BundleError(f"{mpath}: vocabulary has {vocab.n_neurons} neurons but {len(vocab.neuron_ids)} IDs")
        if not 0 < vocab.n_neurons <= MAX_NEURONS:
            raise BundleError(f"{mpath}: {vocab.n_neurons} neurons; at most {MAX_NEURONS:,} are supported")
        if not (0 < window.block_size <= MAX_BLOCK and 0 <= window.prev_block_size <= MAX_BLOCK):
            raise BundleError(
                f"{mpath}: block sizes {window.block_size}/{window.prev_block_size} out of range (1..{MAX_BLOCK})"
            )
        cache = 2 * 4  # K and V, float32
        for key in ("layers", "heads", "head_dim", "slots"):
            v = m["cache"].get(key)
            if not isinstance(v, int) or not 0 < v <= 65536:
                raise BundleError(f"{mpath}: cache.{key} must be a positive integer <= 65536; got {v!r}")
            cache *= v
        if cache > MAX_CACHE_BYTES:
            raise BundleError(
                f"{mpath}: the generation cache would take {cache / 2**30:.1f} GiB per window "
                f"(layers x heads x head_dim x slots); at most {MAX_CACHE_BYTES / 2**30:.0f} GiB"
            )
        for name in required_graphs(config) + tuple(g for g in OPTIONAL_GRAPHS if g in m["graphs"]):
            g = m["graphs"].get(name)
            if not isinstance(g, dict) or not isinstance(g.get("file"), str) or "/" in g["file"] or ".." in g["file"]:
                raise BundleError(f"{mpath}: graph '{name}' missing or its file name is not a plain name")
            for io in g.get("inputs", []) + g.get("outputs", []):
                if io.get("dtype") not in ALLOWED_DTYPES:
                    raise BundleError(f"{mpath}: graph '{name}' tensor {io.get('name')} has dtype {io.get('dtype')!r}")
            f = path / g["file"]
            if not f.exists():
                raise BundleError(f"{path}: graph file {g['file']} is missing")
            if verify_hashes and sha256(f) != g.get("sha256"):
                raise BundleError(f"{f}: sha256 does not match the manifest; the bundle is corrupt or was modified")
        return cls(
            path,
            m,
            config,
            norm,
            vocab,
            CacheShape(**{k: m["cache"][k] for k in ("layers", "heads", "head_dim", "slots")}),
        )

    @property
    def window(self) -> WindowConfig:
        return self.config.window

    @property
    def source(self) -> dict[str, Any]:
        """Provenance of the weights: source run, weights name, training step and sha256 (empty if unknown)."""
        src = self.manifest.get("source", {})
        return src if isinstance(src, dict) else {}

    @property
    def stream_graph_version(self) -> int | None:
        """The stream graph's interface version; None without one. Bundles exported before the version was written
        carry the current interface when their input/output names say so (1), else an older one (0)."""
        g = self.manifest["graphs"].get("stream")
        if g is None:
            return None
        if isinstance(g.get("version"), int):
            return int(g["version"])
        names = {i.get("name") for i in g.get("inputs", [])} | {o.get("name") for o in g.get("outputs", [])}
        return 1 if {"mask", "hidden_before", "new_k0"} <= names else 0

    def has_graph(self, name: str) -> bool:
        return name in self.manifest["graphs"]

    @property
    def graph_names(self) -> tuple[str, ...]:
        """The graphs this bundle has, of GRAPHS + OPTIONAL_GRAPHS, in that order."""
        return tuple(g for g in GRAPHS + OPTIONAL_GRAPHS if self.has_graph(g))

    def graph_path(self, name: str) -> Path:
        return self.path / self.manifest["graphs"][name]["file"]

    def input_names(self, graph: str) -> list[str]:
        return [i["name"] for i in self.manifest["graphs"][graph]["inputs"]]

    def output_names(self, graph: str) -> list[str]:
        return [o["name"] for o in self.manifest["graphs"][graph]["outputs"]]

    @property
    def targets(self) -> tuple[BehaviorSpec, ...]:
        return self.config.targets

    @property
    def behavior_inputs(self) -> tuple[BehaviorSpec, ...]:
        return self.config.inputs

    @property
    def frames(self) -> FramesConfig:
        return self.config.frames


def required_graphs(config: RunConfig) -> tuple[str, ...]:
    """The graphs a bundle of this config must have: `context` and `step` (generation) always, `decode` when the
    model decodes behavior. A spikes-only model (no targets) has nothing to decode: its bundle generates."""
    return tuple(g for g in GRAPHS if g != "decode" or config.targets)


def sha256(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
