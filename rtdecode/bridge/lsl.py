"""Lab Streaming Layer (LSL) in and out of the daemon: acquisition software that speaks LSL feeds a live decode
without knowing rtdecode's wire protocol, and LSL tools (LabRecorder, viewers) record what it decodes.

In, from LSL streams found by name:
* spikes: an irregular-rate stream, one sample per spike. Two channels (unit, time): the unit's ID and the spike
  time on the sender's LSL clock; one channel (unit): the sample's own timestamp is the spike time. Units are
  acquisition unit IDs (mapped through the bundle's `neuron_ids` by the daemon) or, with `unit_ids=False`, model
  indices.
* behavior: each named variable is one channel of a stream (`name=stream[:channel]`); sample timestamps are
  its times.
* markers (optional): a string stream; a "reset" marker starts a new session at its time.
Clocks: LSL times become session seconds by subtracting `origin` (the LSL time of session time 0; by default the
bridge's start). With `time_correction` (a sender on another machine) LSL's measured offset between the sender's
clock and this one (`StreamInlet.time_correction`, re-measured every few seconds) is added first; on one machine
leave it off: both clocks are the same and the offset LSL measures is only noise.
The watermark sent to the daemon ("no older data will come") is, with `watermark = "all"`, the oldest of the
input streams' newest sample times: a window closes once every stream has passed its end, so a behavior sample
pushed just after the spikes of its moment is still in its window (LSL streams travel separately: a spike can
overtake the behavior sample pushed before it). Spikes newer than the watermark wait in the bridge, since the
daemon closes every window that ends before a spike it receives. With "spikes" the watermark is the newest spike
time: windows close as soon as their spikes are in, and a behavior sample that arrives after its window closed
is left to the next window. Either way a quiet stream cannot hold windows open: the watermark is at least this
machine's LSL clock minus `lag`.

Out, as LSL outlets (irregular rate, double64), timestamps on this machine's LSL clock:
* `<prefix>-decode`: one sample per decoded window: the window index, then every target in the bundle's order
  (timestamp: the window's end);
* `<prefix>-activity`: one sample per predicted spike: unit ID, spike time (timestamp: the spike time).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rtdecode.runtime.bundle import Bundle
from rtdecode.wire.client import Producer, Subscriber

__all__ = ["BehaviorChannel", "LslBridge", "LslBridgeConfig", "import_pylsl"]

log = logging.getLogger("rtdecode.bridge.lsl")

TIME_CORRECTION_EVERY_S = 5.0
PULL_MAX_SAMPLES = 4096


def import_pylsl() -> Any:
    try:
        import pylsl
    except ImportError as e:  # pragma: no cover - the message is the point
        raise ImportError("the LSL bridge needs pylsl (its wheel ships liblsl): pip install 'rtdecode[lsl]'") from e
    return pylsl


@dataclass(frozen=True)
class BehaviorChannel:
    """Behavior variable `name` is channel `channel` of LSL stream `stream`."""

    name: str
    stream: str
    channel: int = 0

    @classmethod
    def parse(cls, text: str) -> BehaviorChannel:
        """`name=stream` or `name=stream:channel`."""
        name, sep, rest = text.partition("=")
        stream, _, channel = rest.partition(":")
        if not sep or not name or not stream or (channel and not channel.isdigit()):
            raise ValueError(f"behavior stream {text!r}: expected NAME=STREAM or NAME=STREAM:CHANNEL")
        return cls(name, stream, int(channel or 0))


@dataclass(frozen=True)
class LslBridgeConfig:
    """Where the daemon is, which LSL streams feed it, and how LSL times become session times.

    Args:
        daemon_input, daemon_output: the daemon's PULL and PUB endpoints.
        bundle: the daemon's bundle (the decode outlet's channels and the activity outlet's unit IDs).
        spikes: name of the LSL spike stream.
        behavior: behavior variables to forward (the model's behavior inputs).
        markers: name of an LSL marker stream ("reset" starts a new session), or None.
        unit_ids: spike samples carry acquisition unit IDs (else model indices).
        time_correction: add LSL's measured sender clock offset (senders on other machines).
        origin: LSL time of session time 0 (None: the bridge's start).
        watermark: "all" (every input stream has passed a window's end) or "spikes" (its spikes have).
        lag: the watermark trails this machine's LSL clock by at most this much, s.
        prefix: name prefix of the outlets.
        resolve_timeout: how long to wait for each input stream at start, s.
    """

    daemon_input: str
    daemon_output: str
    bundle: str
    spikes: str
    behavior: tuple[BehaviorChannel, ...] = ()
    markers: str | None = None
    unit_ids: bool = True
    time_correction: bool = False
    origin: float | None = None
    watermark: str = "all"
    lag: float = 0.02
    prefix: str = "rtdecode"
    resolve_timeout: float = 10.0


@dataclass
class _Inlet:
    inlet: Any
    offset: float = 0.0  # sender clock -> this machine's, s (0 without time correction)
    measured_at: float = field(default=float("-inf"))


class LslBridge:
    """LSL inlets -> the daemon's input; the daemon's decodes and activity -> LSL outlets. `run(stop)` blocks."""

    def __init__(self, config: LslBridgeConfig) -> None:
        self.config = config
        self.pylsl = import_pylsl()
        bundle = Bundle.load(config.bundle, verify_hashes=False)
        self.targets = [t.name for t in bundle.targets]
        self.neuron_ids = np.asarray(bundle.vocab.neuron_ids, np.float64)
        self.origin = self.pylsl.local_clock() if config.origin is None else config.origin
        self.ready = threading.Event()
        self.counters: dict[str, int] = {"spikes_in": 0, "behavior_in": 0, "decodes_out": 0, "activity_out": 0}
        self.input_delays_ms: list[float] = []  # newest sample's LSL timestamp -> forwarded to the daemon
        self.output_delays_ms: list[float] = []  # daemon publish -> pushed to the LSL outlet
        if config.watermark not in ("all", "spikes"):
            raise ValueError(f"watermark must be 'all' or 'spikes', got {config.watermark!r}")
        streams = ["spikes"] + (sorted({b.stream for b in config.behavior}) if config.watermark == "all" else [])
        self._newest = dict.fromkeys(streams, float("-inf"))  # each stream's newest sample time (session s)
        self._sent_watermark = float("-inf")
        self._held = (np.zeros(0), np.zeros(0, np.int64), np.zeros(0))  # spikes not yet sent: times, units, stamps

    # ------------------------------------------------------------------ set-up
    def _resolve(self, name: str) -> _Inlet:
        lsl = self.pylsl
        found = lsl.resolve_byprop("name", name, timeout=self.config.resolve_timeout)
        if not found:
            raise TimeoutError(f"no LSL stream named {name!r} within {self.config.resolve_timeout:g} s")
        inlet = lsl.StreamInlet(found[0], max_buflen=60, recover=True)
        inlet.open_stream(timeout=self.config.resolve_timeout)
        return _Inlet(inlet)

    def _outlet(self, suffix: str, labels: list[str]) -> Any:
        lsl = self.pylsl
        info = lsl.StreamInfo(
            f"{self.config.prefix}-{suffix}",
            f"rtdecode-{suffix}",
            len(labels),
            lsl.IRREGULAR_RATE,
            "double64",
            f"{self.config.prefix}-{suffix}",
        )
        channels = info.desc().append_child("channels")
        for label in labels:
            channels.append_child("channel").append_child_value("label", label)
        return lsl.StreamOutlet(info)

    # ------------------------------------------------------------------ the loop
    def run(self, stop: threading.Event) -> None:
        cfg = self.config
        spikes = self._resolve(cfg.spikes)
        behavior_inlets = {s: self._resolve(s) for s in sorted({b.stream for b in cfg.behavior})}
        markers = self._resolve(cfg.markers) if cfg.markers else None
        decode_out = self._outlet("decode", ["window", *self.targets])
        activity_out = self._outlet("activity", ["unit", "time"])
        with (
            Producer(cfg.daemon_input, name=f"lsl-{cfg.prefix}") as producer,
            Subscriber(cfg.daemon_output, topics=("decode", "activity")) as subscriber,
        ):
            producer.control("reset", start=0.0)
            self.ready.set()
            log.info(
                "LSL bridge ready: %s -> %s, outlets %s-decode/-activity", cfg.spikes, cfg.daemon_input, cfg.prefix
            )
            while not stop.is_set():
                busy = False
                if markers is not None:
                    busy |= self._forward_markers(markers, producer)
                for stream, inlet in behavior_inlets.items():
                    busy |= self._forward_behavior(stream, inlet, producer)
                busy |= self._pull_spikes(spikes)
                self._release(producer)
                busy |= self._republish(subscriber, decode_out, activity_out)
                if not busy:
                    time.sleep(0.0005)

    def _times(self, inlet: _Inlet, stamps: np.ndarray) -> np.ndarray:
        """LSL timestamps (sender clock) -> session seconds."""
        if self.config.time_correction:
            now = time.monotonic()
            if now - inlet.measured_at > TIME_CORRECTION_EVERY_S:
                inlet.offset, inlet.measured_at = float(inlet.inlet.time_correction(timeout=1.0)), now
        return np.asarray(stamps, np.float64) + inlet.offset - self.origin

    def _pull(self, inlet: _Inlet) -> tuple[np.ndarray, np.ndarray]:
        samples, stamps = inlet.inlet.pull_chunk(timeout=0.0, max_samples=PULL_MAX_SAMPLES)
        if not stamps:
            return np.zeros((0, 0)), np.zeros(0)
        return np.asarray(samples, np.float64), np.asarray(stamps, np.float64)

    def _pull_spikes(self, inlet: _Inlet) -> bool:
        """Pull the spike stream into the held spikes (released by `_release`)."""
        samples, stamps = self._pull(inlet)
        if not stamps.size:
            return False
        units = np.rint(samples[:, 0]).astype(np.int64)
        times = self._times(inlet, samples[:, 1] if samples.shape[1] > 1 else stamps)
        self._held = (
            np.concatenate([self._held[0], times]),
            np.concatenate([self._held[1], units]),
            np.concatenate([self._held[2], stamps]),
        )
        self.counters["spikes_in"] += int(units.size)
        self._newest["spikes"] = max(self._newest["spikes"], float(times.max()))
        return True

    def _release(self, producer: Producer) -> None:
        """Send the held spikes up to the watermark, then the watermark. A spike closes the windows that end
        before it, so one newer than another stream's newest sample would close a window before that stream's
        samples for it are in: it waits (at most `lag` behind real time)."""
        now = self.pylsl.local_clock()
        mark = max(min(self._newest.values()), now - self.origin - self.config.lag)
        times, units, stamps = self._held
        if times.size:
            ready = times <= mark
            if ready.any():
                order = np.argsort(times[ready], kind="stable")
                out_units = units[ready][order]
                producer.spikes(
                    times[ready][order],
                    out_units if self.config.unit_ids else out_units.astype(np.int32),
                    unit_ids=self.config.unit_ids,
                )
                self.input_delays_ms.append((now - float(stamps[ready].max())) * 1e3)
                self._held = (times[~ready], units[~ready], stamps[~ready])
        if mark > self._sent_watermark + 5e-4:  # a watermark per half-millisecond at most
            producer.clock(mark)
            self._sent_watermark = mark

    def _forward_behavior(self, stream: str, inlet: _Inlet, producer: Producer) -> bool:
        samples, stamps = self._pull(inlet)
        if not stamps.size:
            return False
        times = self._times(inlet, stamps)
        for spec in (b for b in self.config.behavior if b.stream == stream):
            if spec.channel >= samples.shape[1]:
                raise ValueError(
                    f"LSL stream {stream!r} has {samples.shape[1]} channels; {spec.name} wants {spec.channel}"
                )
            producer.behavior(spec.name, times, samples[:, spec.channel])
            self.counters["behavior_in"] += int(times.size)
        if stream in self._newest:
            self._newest[stream] = max(self._newest[stream], float(times.max()))
        return True

    def _forward_markers(self, inlet: _Inlet, producer: Producer) -> bool:
        samples, stamps = inlet.inlet.pull_chunk(timeout=0.0)
        for sample, stamp in zip(samples, stamps):
            if str(sample[0]).strip().lower() == "reset":
                start = float(self._times(inlet, np.array([stamp]))[0])
                producer.control("reset", start=start)
                self._newest = dict.fromkeys(self._newest, start)
                self._sent_watermark = start
                keep = self._held[0] >= start  # spikes of the session that ended are not sent after its reset
                self._held = (self._held[0][keep], self._held[1][keep], self._held[2][keep])
        return bool(stamps)

    def _republish(self, subscriber: Subscriber, decode_out: Any, activity_out: Any) -> bool:
        busy = False
        while (msg := subscriber.receive(timeout=0.0)) is not None:
            busy = True
            if msg["topic"] == "decode":
                values = msg.get("values", {})
                sample = [float(msg["window"])] + [float(values.get(t, np.nan)) for t in self.targets]
                decode_out.push_sample(sample, float(msg["t_end"]) + self.origin)
                self.counters["decodes_out"] += 1
            elif msg["topic"] == "activity" and msg["n"]:
                units = self.neuron_ids[np.asarray(msg["neurons"], np.int64)]
                stamps = np.asarray(msg["times"], np.float64) + self.origin
                activity_out.push_chunk(np.column_stack([units, stamps]).tolist(), stamps.tolist())
                self.counters["activity_out"] += int(msg["n"])
            self.output_delays_ms.append((time.monotonic() - float(msg["t_send"])) * 1e3)
        return busy
