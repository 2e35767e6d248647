"""`edge-gmm subscribe --web`: the live page in a real browser (Debian's chromium driven by playwright), fed by a
real replay loop through a real mosquitto; and, without a browser, the server's bounded queues and endpoints."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "devices"))
from test_loop_kit import LABELS, REPO, make_bundle, make_dataset  # noqa: E402

from edge_gmm.mqtt.payload import example_prediction  # noqa: E402
from edge_gmm.mqtt.web import QUEUE_MAX, WebHub, WebServer, parse_web_address  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
browser_test = pytest.mark.skipif(os.environ.get("EDGE_GMM_PY38_INNER") == "1",
                                  reason="the Python 3.8 device run has no browser; the main suite runs this test")
WAIT_MS = 15_000  # every wait on the page is bounded by this


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("playwright is not installed; run scripts/setup.sh")
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed (the web view is tested in a real browser); run scripts/setup.sh")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)  # a fresh temporary profile
        yield b
        b.close()


@pytest.fixture(scope="module")
def replay(tmp_path_factory):
    """Three 2 s sessions of different labels, looped: the fingerprint model's label changes every second or so."""
    root = tmp_path_factory.mktemp("webreplay")
    return make_dataset(root / "mh", sessions=3, seconds=2.0), make_bundle(root / "bundle")


def start_web(url: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`edge-gmm subscribe --web 127.0.0.1:0` and the URL it prints (--timeout: it ends by itself if a test hangs)."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_gmm.cli.main", "subscribe", "--web", "127.0.0.1:0",
                             "--mqtt", url, "--timeout", "120"],
                            stdout=subprocess.PIPE, stderr=log.open("w"), text=True, cwd=REPO)
    first = proc.stdout.readline().strip()
    assert first.startswith("http://127.0.0.1:"), f"no URL printed: {first!r}; {log.read_text()}"
    return proc, first


def stop(proc: subprocess.Popen, sig: int = signal.SIGINT) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


def start_loop(url: str, device_id: str, dataset: Path, bundle: Path, tmp_path: Path) -> subprocess.Popen:
    # --whole-window: the fingerprint's label flips where a whole window masks the modalities that straddle two
    # sessions (streaming keeps their tokens of data, and the label, which the data's means barely move)
    return subprocess.Popen(
        [sys.executable, "-m", "edge_gmm.cli.main", "run", "--bundle", str(bundle), "--sources",
         f"replay://{dataset}?loop=1", "--mqtt", url, "--device-id", device_id, "--speed", "2",
         "--spool-dir", str(tmp_path / "spool"), "--whole-window"],
        stdout=subprocess.DEVNULL, stderr=(tmp_path / "loop.log").open("w"), cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"})


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def artifact(tmp_path: Path, name: str) -> Path:
    root = Path(os.environ.get("EDGE_GMM_TEST_ARTIFACTS") or tmp_path)
    root.mkdir(parents=True, exist_ok=True)
    return root / name


def labels_seen(label, at_least: int, seconds: float) -> set[str]:
    """Texts the label element shows while we watch, until `at_least` different ones were seen."""
    seen: set[str] = set()
    deadline = time.monotonic() + seconds
    while len(seen) < at_least and time.monotonic() < deadline:
        seen.add(label.text_content())
        time.sleep(0.1)
    return seen


@browser_test
def test_the_page_follows_a_replay_loop_live(browser, mosquitto, replay, tmp_path):
    from playwright.sync_api import expect

    web, url = start_web(mosquitto.url, tmp_path / "web.log")
    loop = start_loop(mosquitto.url, "dev-web", *replay, tmp_path)
    page = browser.new_page(viewport={"width": 1000, "height": 420})
    try:
        page.goto(url)
        card = page.locator("section.device", has=page.get_by_text("dev-web", exact=True))
        expect(card.locator(".status")).to_have_text("online", timeout=WAIT_MS)
        label = card.locator(".label")
        expect(label).to_be_visible(timeout=WAIT_MS)
        seen = labels_seen(label, 2, 15)
        assert len(seen) >= 2 and seen <= set(LABELS), seen  # the label changes as the replayed sessions change
        expect(card.locator(".sensor")).to_have_count(4)  # imu, audio, camera, env: each with its state
        assert all(s.split(": ")[1] in ("ok", "stale", "missing") for s in card.locator(".sensor").all_text_contents())
        expect(card.locator(".latency")).to_contain_text("latency")
        assert card.locator(".timeline rect").count() >= 2  # one band per prediction so far

        state = get_json(url + "api/state")
        dev = state["devices"]["dev-web"]
        assert dev["status"]["state"] == "online" and dev["last"]["tasks"]["state"]["label"] in LABELS
        assert state["broker"]["connected"] and state["web"]["pages"] == 1

        mosquitto.stop()  # the broker restarts: both sides reconnect by themselves
        expect(page.locator("#broker")).to_contain_text("disconnected", timeout=WAIT_MS)
        before = get_json(url + "api/state")["devices"]["dev-web"]["last"]["seq"]
        mosquitto.start()
        expect(page.locator("#broker")).to_contain_text(": connected", timeout=WAIT_MS)
        page.wait_for_function("seq => document.querySelector('.model').textContent.includes('seq ' + (seq + 2))",
                               arg=before, timeout=WAIT_MS)  # predictions flow again
        shot = artifact(tmp_path, "subscribe-web.png")
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot: {shot}")

        assert stop(loop, signal.SIGTERM) == 0  # a clean stop publishes 'offline'
        expect(card.locator(".status")).to_have_text("offline", timeout=WAIT_MS)
        expect(card.locator(".reason")).to_have_text("(stopped)")
        expect(page.locator("#stream")).to_have_text("live")

        assert stop(web) == 0  # Ctrl-C: a clean exit, and the page says the stream is gone
        expect(page.locator("body")).to_have_attribute("data-stream", "disconnected", timeout=WAIT_MS)
        expect(page.locator("#stream")).to_contain_text("disconnected")
    finally:
        page.close()
        stop(loop, signal.SIGTERM)
        stop(web)


@browser_test
def test_markup_from_the_network_is_shown_as_text(browser, mosquitto, tmp_path):
    from playwright.sync_api import expect

    evil = "<script>window.pwned=1<script><img src=x onerror=window.pwned=2>"  # no '/': one topic level
    label = "</script><img src=x onerror=window.pwned=3>"
    body = {**example_prediction(evil), "seq": 0, "ts": time.time()}
    body["tasks"] = {"<b>task</b>": {"label": label, "score": 0.5, "scores": {}}}
    body["sensors"] = {"<i>imu</i>": "<u>ok</u>"}
    web, url = start_web(mosquitto.url, tmp_path / "web.log")
    page = browser.new_page()
    try:
        for kind, payload in (("status", {"v": 1, "device_id": evil, "state": "online", "ts": 1.0}), ("prediction", body)):
            retain = ["-r"] if kind == "status" else []
            subprocess.run(["mosquitto_pub", "-p", str(mosquitto.port), "-q", "1", *retain, "-t",
                            f"edge-gmm/v1/{evil}/{kind}", "-m", json.dumps(payload)], check=True, timeout=10)
        deadline = time.monotonic() + 10
        while evil not in get_json(url + "api/state")["devices"] or not get_json(url + "api/state")["devices"][evil]["last"]:
            assert time.monotonic() < deadline, "the web view never got the prediction"
            time.sleep(0.05)
        page.goto(url)  # opened after the prediction: the snapshot shows it at once
        expect(page.locator(".device-id")).to_have_text(evil, timeout=WAIT_MS)
        expect(page.locator(".label")).to_have_text(label)
        expect(page.locator(".task-name")).to_have_text("<b>task</b>")
        expect(page.locator(".sensor")).to_have_text("<i>imu</i>: <u>ok</u>")
        expect(page.locator(".sensor")).to_have_class("sensor unknown")  # an unknown state gets no state's colour
        assert page.locator("#devices img, #devices script, #devices b, #devices i, #devices u").count() == 0
        assert page.evaluate("window.pwned") is None
    finally:
        page.close()
        stop(web)


def test_a_slow_page_gets_a_snapshot_instead_of_stalling_the_mqtt_thread():
    hub = WebHub("mqtt://test")
    slow = hub.open()  # a page that never reads
    n = QUEUE_MAX * 4
    t0 = time.monotonic()
    for seq in range(n):
        hub.message("dev", "prediction", {**example_prediction("dev"), "seq": seq}, "ok")
    assert time.monotonic() - t0 < 2  # never waited for the page
    assert slow.queue.qsize() <= QUEUE_MAX and slow.behind
    stream = hub.stream(slow)
    assert next(stream).startswith(b"retry:")
    resync = next(stream)
    assert resync.startswith(b"event: snapshot\n")
    snapshot = json.loads(resync.split(b"data: ", 1)[1])
    assert snapshot["devices"]["dev"]["last"]["seq"] == n - 1 and len(snapshot["devices"]["dev"]["history"]) == n
    assert hub.dropped == n + 1  # none of the n events reached it, nor the snapshot queued at open: a fresh one did
    hub.message("dev", "prediction", {**example_prediction("dev"), "seq": n, "latency_ms": {"total": float("nan")}}, "ok")
    assert hub.state()["devices"]["dev"]["last"]["seq"] == n - 1  # NaN is not JSON to a browser: skipped
    hub.close()
    assert list(stream) == []  # the stream ends


def test_server_endpoints_and_the_host_check():
    hub = WebHub("mqtt://test")
    server = WebServer(hub, "127.0.0.1", 0).start()
    try:
        hub.connection(True)
        hub.message("dev", "status", {"v": 1, "device_id": "dev", "state": "online", "ts": 1.0}, None)
        hub.message("dev", "prediction", {**example_prediction("dev"), "seq": 7}, "ok")
        state = get_json(server.url + "api/state")
        assert state["broker"] == {"url": "mqtt://test", "connected": True}
        assert state["devices"]["dev"]["status"]["state"] == "online" and state["devices"]["dev"]["last"]["seq"] == 7
        with urllib.request.urlopen(server.url + "events", timeout=5) as r:
            assert r.headers["Content-Type"] == "text/event-stream"
            assert r.readline() == b"retry: 1000\n" and r.readline() == b"\n"
            assert r.readline() == b"event: snapshot\n"
            assert json.loads(r.readline()[len(b"data: "):])["devices"]["dev"]["last"]["seq"] == 7
        with urllib.request.urlopen(server.url, timeout=5) as r:
            assert b"app.js" in r.read() and "script-src 'self'" in r.headers["Content-Security-Policy"]
        for path, host, code in (("nothing", None, 404), ("api/state", "evil.example:80", 403)):
            req = urllib.request.Request(server.url + path, headers={"Host": host} if host else {})
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(req, timeout=5)
            assert e.value.code == code
    finally:
        server.stop()


def test_web_address_and_options(cli):
    assert parse_web_address("8080") == ("127.0.0.1", 8080)
    assert parse_web_address("0.0.0.0:0") == ("0.0.0.0", 0)
    code, out, err = cli("subscribe", "--web", "http", "--mqtt", "mqtt://127.0.0.1:1")
    assert code == 2 and "[HOST:]PORT" in err
    code, out, err = cli("subscribe", "--web", "0", "--json", "--mqtt", "mqtt://127.0.0.1:1")
    assert code == 2 and "--json and --count are for scripts" in err
