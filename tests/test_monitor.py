"""`rtdecode monitor` against the real daemon on real sockets: the feed's state over HTTP, its survival of
messages it cannot parse, and the page itself in a real headless Chromium (selenium), whose numbers must equal
the decodes (and incoming spikes) the daemon published. Synchronisation polls the state with a deadline, never a
bare sleep. Also, without a daemon: recorded values of circular targets, the highlighted rejection reasons
against docs/protocol.md, and the web server's Host check and Content-Security-Policy.

Set RTDECODE_MONITOR_SCREENSHOT=docs/monitor.png to refresh the README's screenshot from the browser test.
"""

from __future__ import annotations

import contextlib
import http.client
import importlib.util
import json
import os
import re
import shutil
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

pytest.importorskip("aiohttp")

from test_daemon import collect

from rtdecode.core.metrics import angle_of
from rtdecode.data.alignment import behavior_per_window
from rtdecode.data.session import Behavior, Session
from rtdecode.monitor.feed import REJECTIONS, Feed, FeedOptions, MonitorState
from rtdecode.monitor.recorded import Recorded
from rtdecode.monitor.server import CSP, MonitorServer, host_allowed
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.protocol import OUTPUT_TOPICS, encode_decode
from rtdecode.wire.replay import send_paced, session_messages

WINDOW = 0.05  # the tiny bundle's window, s
ROOT = Path(__file__).resolve().parents[1]
WINDOWS_TOPIC = "window" in OUTPUT_TOPICS  # `serve --publish-windows`: the incoming spikes of each decoded window
needs_daemon = pytest.mark.skipif(importlib.util.find_spec("onnxruntime") is None, reason="needs onnxruntime")


@contextlib.contextmanager
def loopback_daemon(bundle: Path, **options: Any) -> Iterator[Any]:
    """A daemon in a thread on loopback TCP ports the system picks (no local path in the page's footer)."""
    from rtdecode.serve.daemon import Daemon, ServeConfig, serve_in_thread

    any_port = "tcp://127.0.0.1:*"
    config = ServeConfig(input=any_port, output=any_port, status_interval=0.05, **options)
    with serve_in_thread(Daemon(bundle, config), ready_timeout=20) as daemon:
        yield daemon


@contextlib.contextmanager
def running_monitor(
    output: str, input: str | None, recorded: Recorded | None = None
) -> Iterator[tuple[MonitorState, str]]:
    """The monitor as `rtdecode monitor` runs it (feed thread + web server on a free port); yields (state, url)."""
    state = MonitorState(FeedOptions(output=output, input=input, describe_every=0.2), recorded)
    feed = Feed(state)
    feed.start()
    server = MonitorServer(state, port=0, rate_hz=20)
    try:
        yield state, server.start()
    finally:
        server.stop()
        feed.stop()


def wait_until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    """Poll `check` until it returns something truthy; fail naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.02)  # polling interval of a deadline-bounded wait, not a synchronisation
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def get_json(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def first_event(url: str) -> dict[str, Any]:
    """The first Server-Sent Event of /api/events."""
    with urllib.request.urlopen(url, timeout=5) as r:
        lines = []
        while (line := r.readline().decode()) not in ("\n", ""):
            lines.append(line)
    assert lines and lines[0].startswith("data: ")
    return json.loads("".join(line[len("data: ") :] for line in lines))


def replay(daemon, session, t1: float, speed: float = 0.0) -> None:
    with Producer(daemon.input_endpoint) as prod:
        sent = send_paced(prod, session_messages(session, batch=0.005, behavior=("theta",), t1=t1), speed=speed)
    assert sent["dropped"] == 0


@needs_daemon
def test_state_shows_the_published_decodes_with_recorded_values(tiny_bundle, tiny_session):
    n = 40
    with (
        loopback_daemon(tiny_bundle, skip_backlog=False) as daemon,
        running_monitor(daemon.output_endpoint, daemon.input_endpoint, Recorded(tiny_session)) as (state, url),
        Subscriber(daemon.output_endpoint, topics=("decode", "status")) as sub,
    ):
        sub.wait_for("status")
        wait_until(lambda: state.status is not None, "the monitor's first status")  # its subscription is live
        replay(daemon, tiny_session, t1=n * WINDOW)
        published = {m["window"]: m for m in collect(sub, "decode", lambda got: got[-1]["window"] >= n - 1)}
        snap = wait_until(
            lambda: (s := get_json(url + "api/state"))["decode_count"] >= n and s, "the monitor's decodes"
        )
        wait_until(lambda: state.describe is not None, "the daemon's description")  # the monitor asked for it
        assert get_json(url + "api/state")["describe"]["neurons"]["n"] == tiny_session.n_neurons
        event = first_event(url + "api/events")
        recorded = get_json(url + f"api/recorded?t0=0&t1={n * WINDOW}")
    assert [d["window"] for d in snap["decodes"]] == list(range(n))
    speed = tiny_session.behavior["speed"]
    for d in snap["decodes"]:
        m = published[d["window"]]
        assert d["values"] == m["values"] and d["n_spikes"] == m["n_spikes"]  # exact: JSON floats round-trip
        assert d["t_start"] == m["t_start"] and d["latency_ms"] == m["latency_ms"]
        expected = behavior_per_window(speed.times, speed.values, np.array([d["t_start"]]), np.array([d["t_end"]]))
        assert d["recorded"]["speed"] == pytest.approx(float(expected[0]), rel=1e-9)  # training sums cumulatively
    assert isinstance(snap["status"]["counters"], dict) and snap["latency"]["n"] == n
    assert snap["feed"]["dropped"] == {} and snap["session"]["n_neurons"] == tiny_session.n_neurons
    assert event["reset"] is True and event["decode_count"] >= n
    in_span = tiny_session.spike_times < n * WINDOW
    assert recorded["times"] == tiny_session.spike_times[in_span].tolist() and not recorded["cut"]


def test_the_feed_counts_and_survives_what_it_cannot_parse():
    """A PUB socket standing in for the daemon sends garbage on the monitor's topics; each is counted by reason,
    and a valid decode after them still arrives."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    head = {"v": 1, "seq": 0, "t_send": 0.0}
    status = [b"status", msgpack.packb({**head, "counters": {"late": 3}})]
    try:
        with running_monitor(f"tcp://127.0.0.1:{port}", None) as (state, url):

            def joined() -> bool:  # PUB drops what it sends before the subscription is in place: retry status
                pub.send_multipart(status)
                return state.received["status"] > 0

            wait_until(joined, "the monitor's subscription")
            for frames in (
                [b"decode"],  # no header
                [b"decode", b"\xc1\xff"],  # not msgpack
                [b"decode", msgpack.packb({**head, "v": 2})],  # another protocol version
                [b"decodes", msgpack.packb(head)],  # passes the SUB prefix filter, unknown topic
                [b"decode", msgpack.packb({**head, "values": [1.0]})],  # fields of the wrong type
                [b"status", msgpack.packb({**head, "counters": [1, 2]})],
                [b"activity", msgpack.packb({**head, "window": 0, "t_start": 0.0, "n": 2}), b"", b""],
            ):
                pub.send_multipart(frames)
            pub.send_multipart(encode_decode(1, 0.0, 7, 0.35, 0.4, {"speed": 1.5}, 12, 0, 3, 0.0, 0.25))
            snap = wait_until(lambda: (s := get_json(url + "api/state"))["decode_count"] == 1 and s, "the decode")
    finally:
        pub.close()
        context.term()
    assert snap["feed"]["dropped"] == {
        "malformed": 2,
        "bad_version": 1,
        "unknown_topic": 1,
        "bad_decode": 1,
        "bad_status": 1,
        "bad_buffer": 1,
    }
    (d,) = snap["decodes"]
    assert d["window"] == 7 and d["values"] == {"speed": 1.5} and d["recorded"] == {}
    assert snap["status"]["counters"] == {"late": 3} and snap["describe"] is None


def test_the_feed_thread_survives_an_unexpected_error(monkeypatch: pytest.MonkeyPatch):
    """An exception while handling one message (a bug, not bad input) is counted as "internal"; the next message
    is still handled: the feed thread never dies."""
    context = zmq.Context()
    pub = context.socket(zmq.PUB)
    pub.setsockopt(zmq.LINGER, 0)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    original = MonitorState._entry

    def entry(self: MonitorState, msg: dict[str, Any], t_receive: float) -> dict[str, Any]:
        if msg["topic"] == "decode" and msg["window"] == 1:
            raise RuntimeError("a bug")
        return original(self, msg, t_receive)

    monkeypatch.setattr(MonitorState, "_entry", entry)
    status = [b"status", msgpack.packb({"v": 1, "seq": 0, "t_send": 0.0, "counters": {}})]
    try:
        with running_monitor(f"tcp://127.0.0.1:{port}", None) as (state, url):

            def joined() -> bool:
                pub.send_multipart(status)
                return state.received["status"] > 0

            wait_until(joined, "the monitor's subscription")
            for window in (1, 2):
                pub.send_multipart(encode_decode(window, 0.0, window, 0.05 * window, 0.05, {"x": 1.0}, 1, 0, 0, 0, 1))
            snap = wait_until(lambda: (s := get_json(url + "api/state"))["decode_count"] == 1 and s, "the decode")
    finally:
        pub.close()
        context.term()
    assert snap["feed"]["dropped"] == {"internal": 1} and [d["window"] for d in snap["decodes"]] == [2]


def test_the_feed_asks_again_for_a_description_when_the_model_changes():
    """A status naming another model than the description (the daemon restarted with another bundle) makes the
    monitor ask for the description again; a matching one does not."""
    context = zmq.Context()
    pub, pull = context.socket(zmq.PUB), context.socket(zmq.PULL)
    for s in (pub, pull):
        s.setsockopt(zmq.LINGER, 0)
    out_port, in_port = pub.bind_to_random_port("tcp://127.0.0.1"), pull.bind_to_random_port("tcp://127.0.0.1")
    head = {"v": 1, "seq": 0, "t_send": 0.0}

    def status(sha: str) -> list[bytes]:
        return [b"status", msgpack.packb({**head, "model": {"sha256": sha, "step": 1}, "counters": {}})]

    def describe(sha: str) -> list[bytes]:
        return [b"describe", msgpack.packb({**head, "model": {"sha256": sha}, "targets": []})]

    def requests() -> list[str]:  # the describe requests the monitor sent so far
        out = []
        while pull.poll(0):
            frames = pull.recv_multipart()
            out.append(msgpack.unpackb(frames[1])["cmd"])
        return out

    try:
        with running_monitor(f"tcp://127.0.0.1:{out_port}", f"tcp://127.0.0.1:{in_port}") as (state, _):
            assert "describe" in wait_until(requests, "the first describe request")  # it reaches the daemon

            def described(sha: str) -> Callable[[], bool]:
                def check() -> bool:
                    pub.send_multipart(describe(sha))
                    pub.send_multipart(status(sha))
                    return bool(state.describe and state.describe["model"]["sha256"] == sha and state.status)

                return check

            wait_until(described("aaa"), "the description")
            asked = state.describe_requests  # counted on the feed thread, which also folds in the description
            time.sleep(0.5)  # the request period is 0.2 s: a matching description is not asked for again
            assert state.describe_requests == asked and not state.describe_stale
            pub.send_multipart(status("bbb"))  # another model: ask again (every 0.2 s) until its description comes
            wait_until(lambda: state.describe_requests > asked, "a new describe request")
            assert state.describe_stale and state.snapshot()["describe_stale"]
            wait_until(described("bbb"), "the new description")
            snap = state.snapshot()
    finally:
        pub.close()
        pull.close()
        context.term()
    assert snap["describe"]["model"]["sha256"] == "bbb" and snap["describe_stale"] is False


# ------------------------------------------------------------------------------------------------ recorded
def angle_session() -> Session:
    """A heading sampled at 100 Hz that flips across +-pi every sample, and the same numbers as a plain variable."""
    t = np.arange(0.0, 1.0, 0.01)
    v = np.where(np.arange(t.size) % 2 == 0, np.pi - 0.05, -np.pi + 0.05)
    behavior = {"heading": Behavior(t, v), "plain": Behavior(t, v.copy())}
    return Session(np.array([0.5]), np.array([0], np.int32), 1, 0.0, 1.0, behavior=behavior)


def test_a_circular_target_is_recorded_as_its_circular_mean():
    session = angle_session()
    rec = Recorded(session)
    b = session.behavior["heading"]
    for t0, t1 in ((0.2, 0.25), (0.2, 0.3), (0.203, 0.206)):  # samples inside; none inside: interpolation
        got = rec.values(["heading", "plain"], t0, t1, circular={"heading"})
        lo, hi = np.array([t0]), np.array([t1])
        cos, sin = (behavior_per_window(b.times, f(b.values), lo, hi) for f in (np.cos, np.sin))
        assert got["heading"] == pytest.approx(float(angle_of(cos, sin)[0]), abs=1e-12)  # as training computes it
        assert abs(abs(got["heading"]) - np.pi) < 0.05  # across the seam: ~pi, not ~0
        assert abs(got["plain"]) < 1.0  # not circular: the arithmetic mean, near 0
    assert rec.values(["heading"], 0.2, 0.25)["heading"] == pytest.approx(rec.values(["plain"], 0.2, 0.25)["plain"])


def test_the_state_records_circular_targets_once_described():
    """Before the description the monitor cannot know a target is circular; when it arrives, the kept decodes'
    recorded values are computed again and the page is sent everything anew (a new generation)."""
    state = MonitorState(FeedOptions(input=None), Recorded(angle_session()))
    state.add(encode_decode(1, 0.0, 4, 0.2, 0.25, {"heading": 3.1}, 5, 0, 0, 0.0, 1.0), 0.0)
    (before,) = state.snapshot()["decodes"]
    assert abs(before["recorded"]["heading"]) < 1.0 and state.generation == 0
    head = {"v": 1, "seq": 1, "t_send": 0.0, "model": {"sha256": "a"}}
    targets = [{"name": "heading", "kind": "circular", "unit": "rad"}]
    state.add([b"describe", msgpack.packb({**head, "targets": targets})], 0.0)
    state.add(encode_decode(2, 0.0, 5, 0.25, 0.3, {"heading": 3.1}, 5, 0, 0, 0.0, 1.0), 0.0)
    snap = state.snapshot()
    assert state.generation == 1 and [d["id"] for d in snap["decodes"]] == [before["id"], before["id"] + 2]
    for d in snap["decodes"]:
        assert abs(abs(d["recorded"]["heading"]) - np.pi) < 0.05


# ------------------------------------------------------------------------------------------------ rejections
def protocol_reasons() -> set[str]:
    """The reasons docs/protocol.md's two rejection tables name (backquoted)."""
    doc = (ROOT / "docs" / "protocol.md").read_text()
    names: set[str] = set()
    for heading, column in (("**Whole messages.**", 3), ("**Parts of messages.**", 2)):
        lines = doc[doc.index(heading) :].splitlines()
        start = next(i for i, line in enumerate(lines) if line.startswith("|"))
        rows = []
        for line in lines[start + 2 :]:  # after the header and its separator
            if not line.startswith("|"):
                break
            rows.append(line)
        assert rows, f"no table after {heading}"
        for row in rows:
            cell = row.strip().strip("|").split("|")[column - 1]
            found = re.findall(r"`([a-z_]+)`", cell)
            assert found, f"no reason in {row!r}"
            names.update(found)
    return names


def test_every_rejection_reason_of_the_protocol_is_highlighted():
    reasons = protocol_reasons()
    assert {"malformed", "unknown_behavior", "seq_duplicate", "bad_value", "internal_error"} <= reasons
    assert reasons - set(REJECTIONS) == set()
    assert len(REJECTIONS) == len(set(REJECTIONS))


# ------------------------------------------------------------------------------------------------ web server
def request(url: str, path: str, host: str | None) -> http.client.HTTPResponse:
    parts = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=5)
    conn.putrequest("GET", path, skip_host=True)
    if host is not None:
        conn.putheader("Host", host)
    conn.endheaders()
    response = conn.getresponse()
    response.read()
    conn.close()
    return response


def test_the_server_refuses_foreign_hosts_and_sets_a_content_security_policy():
    with running_monitor("tcp://127.0.0.1:9", None) as (_, url):  # nothing there: the page still serves
        port = urllib.parse.urlsplit(url).port
        for path in ("/", "/api/state", "/static/monitor.js"):
            for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"):
                ok = request(url, path, host)
                assert ok.status == 200, (path, host)
                assert ok.getheader("Content-Security-Policy") == CSP == "default-src 'self'"
            for host in (
                f"evil.example:{port}",
                f"127.0.0.1.nip.io:{port}",
                f"127.0.0.1:{port + 1}",
                "127.0.0.1",
            ):
                refused = request(url, path, host)
                assert refused.status == 403, (path, host)
                assert refused.getheader("Content-Security-Policy") == CSP


def test_host_allowed_by_bound_address():
    assert host_allowed("127.0.0.1:8765", "127.0.0.1", 8765) and host_allowed("LOCALHOST:8765", "127.0.0.1", 8765)
    assert not host_allowed("rebind.example:8765", "127.0.0.1", 8765)
    assert host_allowed("10.0.0.5:80", "0.0.0.0", 80) and host_allowed("10.0.0.5", "0.0.0.0", 80)
    assert not host_allowed("rig.example:80", "0.0.0.0", 80) and host_allowed("rig.example:80", "rig.example", 80)
    assert not host_allowed("10.0.0.5:8765", "10.0.0.6", 8765) and not host_allowed("", "127.0.0.1", 8765)
    assert not host_allowed("localhost:8765", "10.0.0.6", 8765) and not host_allowed("a:b:c", "127.0.0.1", 8765)


# ------------------------------------------------------------------------------------------------ the page
def chromium_driver():
    """A headless Chromium under selenium, or a skip naming what is missing."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the dev extra)")
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--hide-scrollbars"):
        options.add_argument(arg)
    options.add_argument("--window-size=1440,1000")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the test reads the page's console
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


REJECTED = '.chip.reject.nonzero[data-counter="unknown_behavior"]'
LATEST = """
const table = document.getElementById("latest");
const read = (cls) => Object.fromEntries([...table.querySelectorAll("." + cls)].map(
    (e) => [e.dataset.name, {text: e.textContent, value: e.dataset.value}]));
return {window: table.dataset.window, count: document.getElementById("decode-count").textContent,
        decoded: read("decode-value"), recorded: read("recorded-value")};
"""
HELD = """
return {decodes: S.decodes, windows: S.windows.map((w) => ({window: w.window, n: w.n, times: w.times,
        neurons: w.neurons})), incoming: document.getElementById("incoming-spike-count").textContent};
"""


@needs_daemon
def test_the_page_shows_the_published_decodes_in_a_real_browser(
    tiny_bundle, tiny_session, tiny_session_path, tmp_path: Path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    n = 80  # 4 s of windows: all inside the page's 5-s rasters and its 100 kept windows
    publish = {"publish_windows": True} if WINDOWS_TOPIC else {}
    last_topic = "window" if WINDOWS_TOPIC else "decode"  # a window's spikes are published after its decode
    try:
        with (
            loopback_daemon(tiny_bundle, skip_backlog=False, generate=True, **publish) as daemon,
            running_monitor(
                daemon.output_endpoint, daemon.input_endpoint, Recorded(tiny_session, tiny_session_path)
            ) as (state, url),
            Subscriber(
                daemon.output_endpoint, topics=("decode", "status", *(["window"] if WINDOWS_TOPIC else []))
            ) as sub,
        ):
            sub.wait_for("status")
            wait_until(lambda: state.status is not None, "the monitor's first status")
            driver.get(url)
            WebDriverWait(driver, 10).until(
                lambda d: "live" in d.find_element(By.ID, "connection").get_attribute("class")
            )
            replay(daemon, tiny_session, t1=n * WINDOW, speed=4.0)  # live: the page redraws while it streams
            published: dict[str, dict[int, dict]] = {"decode": {}, "window": {}}
            for msg in sub.messages(timeout=30):
                if msg["topic"] in published:
                    published[msg["topic"]][msg["window"]] = msg
                    if msg["topic"] == last_topic and msg["window"] >= n - 1:
                        break
            WebDriverWait(driver, 15).until(lambda d: d.execute_script(LATEST)["window"] == str(n - 1))
            if WINDOWS_TOPIC:
                WebDriverWait(driver, 15).until(
                    lambda d: d.execute_script("return S.windows.length && S.windows.at(-1).window") == n - 1
                )
            page = driver.execute_script(LATEST)
            held = driver.execute_script(HELD)
            with Producer(daemon.input_endpoint) as prod:  # a behavior the model does not take: a rejection
                prod.behavior("pupil", np.array([n * WINDOW]), np.array([1.0]))
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, REJECTED))
            wait_until(lambda: state.describe is not None, "the daemon's description")
            describe = state.describe
            wait_until(lambda: state.activity, "predicted activity")
            time.sleep(0.3)  # let the page draw its last update before the screenshot (not a synchronisation)
            save_screenshot(driver, tmp_path / "monitor.png")
            console = driver.get_log("browser")
    finally:
        driver.quit()
    errors = [m for m in console if m["level"] == "SEVERE" and "favicon.ico" not in m["message"]]
    assert errors == []  # no script error, nothing the Content-Security-Policy refused
    decodes = published["decode"]
    assert sorted(decodes) == list(range(n)) and int(page["count"]) == n
    # every decode the page holds, exactly as published (JSON doubles round-trip)
    assert [d["window"] for d in held["decodes"]] == list(range(n))
    for d in held["decodes"]:
        m = decodes[d["window"]]
        assert d["values"] == m["values"] and d["n_spikes"] == m["n_spikes"] and d["t_start"] == m["t_start"]
        assert d["latency_ms"] == m["latency_ms"] and d["truncated"] == m.get("truncated", 0)
    last = decodes[n - 1]
    assert set(page["decoded"]) == set(last["values"])
    for name, value in last["values"].items():
        assert float(page["decoded"][name]["value"]) == value  # the exact double, as JavaScript prints it
        assert page["decoded"][name]["text"] == f"{value:.3f}"
    speed = tiny_session.behavior["speed"]
    expected = behavior_per_window(speed.times, speed.values, np.array([last["t_start"]]), np.array([last["t_end"]]))
    assert float(page["recorded"]["speed"]["value"]) == pytest.approx(float(expected[0]), rel=1e-9)
    # a classification target's recorded value is shown as its class, as training bins it
    (phi,) = [t for t in describe["targets"] if t["name"] == "phi"]
    b = tiny_session.behavior["phi"]
    raw = behavior_per_window(b.times, b.values, np.array([last["t_start"]]), np.array([last["t_end"]]))
    assert float(page["recorded"]["phi"]["value"]) == float(np.digitize(raw, phi["bins"])[0])
    if not WINDOWS_TOPIC:  # a daemon without `window` messages: the raster falls back to the --session file
        assert held["windows"] == []
        return
    # the incoming raster: every window the page holds, as published, and the count it drew
    windows = published["window"]
    assert sorted(windows) == list(range(n)) and [w["window"] for w in held["windows"]] == list(range(n))
    for w in held["windows"]:
        m = windows[w["window"]]
        assert w["n"] == m["n"] and w["times"] == m["times"].tolist() and w["neurons"] == m["neurons"].tolist()
    assert int(held["incoming"]) == sum(m["n"] for m in windows.values()) > 0
    assert sum(m["n"] for m in windows.values()) == sum(d["n_spikes"] for d in decodes.values())


def save_screenshot(driver, path: Path) -> None:
    """The whole page as PNG at `path`; with RTDECODE_MONITOR_SCREENSHOT set, also there (the docs copy)."""
    for _ in range(3):  # the window's outer height includes browser chrome: grow until the page fits
        inner, height = driver.execute_script("return [window.innerHeight, document.documentElement.scrollHeight]")
        if height <= inner:
            break
        driver.set_window_size(1440, driver.get_window_size()["height"] + height - inner)
    assert driver.save_screenshot(str(path))
    if target := os.environ.get("RTDECODE_MONITOR_SCREENSHOT"):
        shutil.copyfile(path, target)
        assert Path(target).stat().st_size < 300_000, "keep the docs screenshot small"
