"""The monitor's web server (aiohttp): the page, its state as JSON, and a Server-Sent Events stream of changes.

Routes:
    GET /                    the page (static/index.html; monitor.js and monitor.css under /static/)
    GET /api/state           the whole state as JSON (`MonitorState.snapshot`): for scripts and tests
    GET /api/events          Server-Sent Events: the first event is the whole state (`reset: true`), then at most
                             `rate_hz` events a second, each with only what is new since the previous one
                             (and one a second when nothing changed, so the page can see the daemon fall silent)
    GET /api/recorded?t0=&t1= the replayed session's recorded spikes in [t0, t1) s (404 without --session)

SSE rather than a WebSocket: the page only listens, and the browser's EventSource reconnects by itself. Pushes
are batched at a bounded rate, so a fast daemon costs the browser at most `rate_hz` redraws a second.
The server runs on its own thread and event loop (`MonitorServer`), beside the feed thread.

Defence in depth, although the page only shows what it is sent: a request whose Host header is not the address
the page is served on (with the port it was reached on; `localhost`, 127.0.0.1 and ::1 also for a loopback
address; any IP address for a wildcard address) is refused with 403, so that a web page elsewhere cannot read
the decodes through DNS rebinding; every response carries `Content-Security-Policy: default-src 'self'` (the page
has no inline script or style).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import threading
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

try:
    from aiohttp import web
except ImportError as e:  # the monitor is an extra: say how to get it
    raise ImportError("rtdecode monitor needs aiohttp: pip install 'rtdecode[monitor]'") from e

from rtdecode.monitor.feed import MonitorState

__all__ = ["MonitorServer", "make_app", "host_allowed"]

STATIC = Path(str(resources.files("rtdecode.monitor") / "static"))
MAX_RATE_HZ = 20.0
CSP = "default-src 'self'"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
WILDCARDS = frozenset({"", "0.0.0.0", "::"})

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def host_allowed(header: str | None, bound_host: str, port: int) -> bool:
    """Whether a request's Host `header` names the page's own address: `bound_host` (what the server was asked
    to bind; `localhost`, 127.0.0.1 and ::1 too when it is a loopback address, any IP address when it is a
    wildcard) with `port`, the port the request came in on. A DNS name other than those (DNS rebinding: a foreign
    name resolving to this machine) is refused."""
    if not header:
        return False
    try:
        split = urlsplit("//" + header)
        name, given = split.hostname, split.port
    except ValueError:
        return False
    if name is None or (given if given is not None else 80) != port:
        return False
    bound = bound_host.strip("[]").lower()
    if name == bound:
        return True
    if bound in WILDCARDS:
        return name == "localhost" or _is_ip(name)
    loopback = bound in LOOPBACK_NAMES or (_is_ip(bound) and ipaddress.ip_address(bound).is_loopback)
    return loopback and name in LOOPBACK_NAMES


def _dumps(obj: Any) -> str:
    return json.dumps(obj, allow_nan=False, separators=(",", ":"))


def make_app(
    state: MonitorState, rate_hz: float = 10.0, closing: asyncio.Event | None = None, host: str = "127.0.0.1"
) -> web.Application:
    """The aiohttp application serving `state` on `host` (for the Host header check); `closing`, once set, ends
    every open event stream."""
    period = 1.0 / min(max(rate_hz, 0.1), MAX_RATE_HZ)
    closing = closing or asyncio.Event()

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        sockname = request.transport.get_extra_info("sockname") if request.transport else None
        port = int(sockname[1]) if sockname else -1  # the port this request came in on
        if not host_allowed(request.headers.get("Host"), host, port):
            raise web.HTTPForbidden(text="this page answers only to its own address (Host header refused)")
        return await handler(request)

    async def security_headers(_: web.Request, response: web.StreamResponse) -> None:
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Content-Type-Options"] = "nosniff"

    async def index(_: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def api_state(_: web.Request) -> web.Response:
        return web.Response(text=_dumps(state.snapshot()), content_type="application/json")

    async def api_recorded(request: web.Request) -> web.Response:
        if state.recorded is None:
            raise web.HTTPNotFound(text="no recorded session: start the monitor with --session")
        try:
            t0, t1 = float(request.query["t0"]), float(request.query["t1"])
        except (KeyError, ValueError) as e:
            raise web.HTTPBadRequest(text="give t0 and t1 in seconds: /api/recorded?t0=10&t1=15") from e
        return web.Response(text=_dumps(state.recorded.spikes(t0, t1)), content_type="application/json")

    async def api_events(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        sent_version, sent_generation, first, sent_at = -1, -1, True, 0.0
        since = {"decodes": 0, "activity": 0, "windows": 0}  # the last id sent of each
        loop = asyncio.get_running_loop()
        try:
            while not closing.is_set():
                generation = state.generation
                if generation != sent_generation:  # kept entries were rewritten (or first event): send them all
                    first, since = True, dict.fromkeys(since, 0)
                # on change, and once a second regardless: the page tells a silent daemon from a quiet page
                if first or state.version != sent_version or loop.time() - sent_at >= 1.0:
                    sent_at = loop.time()
                    snap = state.snapshot(since["decodes"], since["activity"], since["windows"])
                    snap["reset"] = first
                    first = False
                    sent_version, sent_generation = snap["version"], generation
                    for key in since:
                        since[key] = snap[key][-1]["id"] if snap[key] else since[key]
                    await response.write(f"data: {_dumps(snap)}\n\n".encode())
                try:
                    await asyncio.wait_for(closing.wait(), period)
                except asyncio.TimeoutError:
                    pass
        except (ConnectionResetError, ConnectionError):
            pass  # the page went away
        return response

    app = web.Application(middlewares=[guard])
    app.on_response_prepare.append(security_headers)
    app.router.add_get("/", index)
    app.router.add_get("/api/state", api_state)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/recorded", api_recorded)
    app.router.add_static("/static/", STATIC)
    return app


class MonitorServer:
    """The web server on a thread of its own: `start()` returns the page's URL once the port is bound."""

    def __init__(self, state: MonitorState, host: str = "127.0.0.1", port: int = 8765, rate_hz: float = 10.0) -> None:
        self.state, self.host, self.port, self.rate_hz = state, host, port, rate_hz
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._stopped: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="rtdecode-monitor-web", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, timeout: float = 10.0) -> str:
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError(f"the monitor's web server did not start within {timeout:g} s")
        if self._error is not None:
            raise self._error
        return self.url

    def stop(self, timeout: float = 5.0) -> None:
        loop, closing, stopped = self._loop, self._closing, self._stopped
        if loop is not None and closing is not None and stopped is not None and not loop.is_closed():
            loop.call_soon_threadsafe(closing.set)
            loop.call_soon_threadsafe(stopped.set)
        self._thread.join(timeout)

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        finally:
            loop.close()

    async def _serve(self) -> None:
        self._closing, self._stopped = asyncio.Event(), asyncio.Event()
        app = make_app(self.state, self.rate_hz, self._closing, self.host)
        runner = web.AppRunner(app, shutdown_timeout=1.0)
        try:
            await runner.setup()
            await web.TCPSite(runner, self.host, self.port).start()
            self.port = int(runner.addresses[0][1])  # the bound port when 0 asked for a free one
        except BaseException as e:
            self._error = e
            self._ready.set()
            await runner.cleanup()
            return
        self._ready.set()
        try:
            await self._stopped.wait()
        finally:
            await runner.cleanup()
