"""`rtdecode monitor` against the real daemon on real sockets: the feed's state over HTTP, its survival of
messages it cannot parse, and the page itself in a real headless Chromium (selenium), whose numbers must equal
the decodes the daemon published. Synchronisation polls the state with a deadline, never a bare sleep.

Set RTDECODE_MONITOR_SCREENSHOT=docs/monitor.png to refresh the README's screenshot from the browser test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq

pytest.importorskip("onnxruntime")
pytest.importorskip("aiohttp")

from test_daemon import collect, running_daemon

from rtdecode.data.alignment import behavior_per_window
from rtdecode.monitor.feed import Feed, FeedOptions, MonitorState
from rtdecode.monitor.recorded import Recorded
from rtdecode.monitor.server import MonitorServer
from rtdecode.wire.client import Producer, Subscriber
from rtdecode.wire.protocol import OUTPUT_TOPICS, encode_decode
from rtdecode.wire.replay import send_paced, session_messages

WINDOW = 0.05  # the tiny bundle's window, s


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


def test_state_shows_the_published_decodes_with_recorded_values(tiny_bundle, tiny_session):
    n = 40
    with (
        running_daemon(tiny_bundle, skip_backlog=False) as daemon,
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
        if "describe" in OUTPUT_TOPICS:  # protocol 1.1: the monitor asked for the description and got it
            wait_until(lambda: state.describe is not None, "the daemon's description")
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
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))


REJECTED = '.chip.reject.nonzero[data-counter="unknown_behavior"]'
LATEST = """
const table = document.getElementById("latest");
const read = (cls) => Object.fromEntries([...table.querySelectorAll("." + cls)].map(
    (e) => [e.dataset.name, {text: e.textContent, value: e.dataset.value}]));
return {window: table.dataset.window, count: document.getElementById("decode-count").textContent,
        decoded: read("decode-value"), recorded: read("recorded-value")};
"""


def test_the_page_shows_the_published_decodes_in_a_real_browser(
    tiny_bundle, tiny_session, tiny_session_path, tmp_path: Path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = chromium_driver()
    n = 80
    try:
        with (
            running_daemon(tiny_bundle, skip_backlog=False, generate=True) as daemon,
            running_monitor(
                daemon.output_endpoint, daemon.input_endpoint, Recorded(tiny_session, tiny_session_path)
            ) as (state, url),
            Subscriber(daemon.output_endpoint, topics=("decode", "status")) as sub,
        ):
            sub.wait_for("status")
            wait_until(lambda: state.status is not None, "the monitor's first status")
            driver.get(url)
            WebDriverWait(driver, 10).until(
                lambda d: "live" in d.find_element(By.ID, "connection").get_attribute("class")
            )
            replay(daemon, tiny_session, t1=n * WINDOW, speed=4.0)  # live: the page redraws while it streams
            published = {m["window"]: m for m in collect(sub, "decode", lambda got: got[-1]["window"] >= n - 1)}
            WebDriverWait(driver, 15).until(lambda d: d.execute_script(LATEST)["window"] == str(n - 1))
            page = driver.execute_script(LATEST)
            with Producer(daemon.input_endpoint) as prod:  # a behavior the model does not take: a rejection
                prod.behavior("pupil", np.array([n * WINDOW]), np.array([1.0]))
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, REJECTED))
            describe = state.describe
            wait_until(lambda: state.activity, "predicted activity")
            time.sleep(0.3)  # let the page draw its last update before the screenshot (not a synchronisation)
            save_screenshot(driver, tmp_path / "monitor.png")
    finally:
        driver.quit()
    assert int(page["count"]) == n
    last = published[n - 1]
    assert set(page["decoded"]) == set(last["values"])
    for name, value in last["values"].items():
        assert float(page["decoded"][name]["value"]) == value  # the exact double, as JavaScript prints it
        assert page["decoded"][name]["text"] == f"{value:.3f}"
    speed = tiny_session.behavior["speed"]
    expected = behavior_per_window(speed.times, speed.values, np.array([last["t_start"]]), np.array([last["t_end"]]))
    assert float(page["recorded"]["speed"]["value"]) == pytest.approx(float(expected[0]), rel=1e-9)
    if describe is not None:  # a classification target's recorded value is shown as its class, as training bins it
        (phi,) = [t for t in describe["targets"] if t["name"] == "phi"]
        b = tiny_session.behavior["phi"]
        raw = behavior_per_window(b.times, b.values, np.array([last["t_start"]]), np.array([last["t_end"]]))
        assert float(page["recorded"]["phi"]["value"]) == float(np.digitize(raw, phi["bins"])[0])


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
