"""Cache warming: run a throwaway model step just before a window closes, off the daemon's loop thread.

Between a window's last streaming step and its close the daemon sleeps in its poller for a few milliseconds, and
on a shared machine that is long enough for the close's working set (the model's weights plus the window's
cross-attention keys/values) to leave the caches, so the same tail runs slower after the sleep than back to back
(docs/results.md). A one-token step of the same graph, with the same context, shortly before the close reads all
of that memory again, so the close finds it warm.

It runs on its own thread so that it never delays the close: if the closing message arrives while the warm-up is
still running, the close runs beside it (onnxruntime sessions accept concurrent runs) instead of waiting behind it.
Its result is discarded; it changes no state that a decode reads, so it cannot change a decode.

Off by default (`rtdecode serve --warm-lead-ms`): whether it pays depends on the CPU's caches and on who else
uses them: on a host whose last-level cache keeps the weights anyway it only costs time (docs/performance.md).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import numpy as np

__all__ = ["CacheWarmer"]


class _Runs(Protocol):
    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...


Steps = list[tuple[str, dict[str, np.ndarray]]]  # (graph, feeds), run in order


class CacheWarmer:
    """A thread that runs the steps of the newest `arm` call at the time it names.

    Only the newest request is kept: a later `arm` replaces one not yet started (the daemon re-arms as its
    prediction of the close improves). Requests whose time has already passed are run at once.
    """

    def __init__(self, backend: _Runs) -> None:
        self._backend = backend
        self._cond = threading.Condition()
        self._job: tuple[float, Steps] | None = None
        self._stopping = False
        self.busy = False  # a warm-up is running now (read by the daemon at close, for its counter)
        self.runs = 0
        self.errors = 0
        self._thread = threading.Thread(target=self._loop, name="rtdecode-warm", daemon=True)
        self._thread.start()

    def arm(self, at: float, steps: Steps) -> None:
        """Run `steps` at `at` (time.monotonic() seconds). Their feeds must not be modified after."""
        with self._cond:
            self._job = (at, steps)
            self._cond.notify()

    def cancel(self) -> None:
        """Drop the request not yet started, if any."""
        with self._cond:
            self._job = None
            self._cond.notify()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._stopping:
                        return
                    if self._job is not None:
                        delay = self._job[0] - time.monotonic()
                        if delay <= 0:
                            break
                        self._cond.wait(delay)  # woken early by a newer request or stop
                    else:
                        self._cond.wait()
                _, steps = self._job
                self._job = None
                self.busy = True
            ok = True
            try:
                for graph, feeds in steps:
                    self._backend.run(graph, feeds)
            except Exception:  # a warm-up is only a hint: a failure must never reach the daemon
                ok = False
            self.busy = False
            if ok:
                self.runs += 1
            else:
                self.errors += 1
