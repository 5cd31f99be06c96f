"""film.html of a real seed run, opened in Debian's headless Chromium and stepped through moment by moment.

At every moment the page must agree with the trace, worked out here from the raw records (not from the
film model the page is made from): each host's connection state and its colour in the RFC diagram
(server blue, client red, green where both are), the transition just taken, the packet list's rows and
current row, each netstat pane's rows and each console's lines. The page must log no error and fetch
nothing. Screenshots of the handshake, the data exchange and TIME_WAIT are saved in test-artifacts/
(film-handshake.png, film-data.png, film-time_wait.png), or in $TCPLAB_ARTIFACTS when that is set.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from controller import rfc9293
from controller.film.model import RFC_TRANSITIONS
from controller.trace import load

pytestmark = pytest.mark.integration

LISTENER = "0.0.0.0:*"
MOMENT_KINDS = {"step", "shaper", "packet", "kernel", "state", "console"}


@pytest.fixture(scope="module")
def artifacts() -> Path:
    """Where the screenshots are kept: $TCPLAB_ARTIFACTS, else test-artifacts/ in the checkout (git ignores it)."""
    path = Path(os.environ.get("TCPLAB_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


class Page:
    """A film.html page; every request other than the file itself is refused and remembered."""

    def __init__(self, browser, html: Path):
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1500, "height": 1000})
        self.page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        self.page.on("console", lambda m: self.errors.append(f"{m.type}: {m.text}")
                     if m.type in ("error", "warning") else None)
        self.page.route("**/*", self._route)
        self.url = html.as_uri()

    def _route(self, route):
        url = route.request.url
        if url.split("#")[0] == self.url:
            route.continue_()
        else:
            self.requests.append(url)
            route.abort()

    def open(self, fragment: str = "") -> "Page":
        self.page.goto(self.url + fragment)
        self.page.wait_for_selector("body[data-moment]")
        return self

    def moment(self) -> int:
        return int(self.page.get_attribute("body", "data-moment"))

    def view(self) -> dict:
        """What the page shows, read from its DOM in one go."""
        return self.page.evaluate("""() => {
          const q = (s) => Array.from(document.querySelectorAll(s));
          return {
            states: q('#state-diagram .state').map(g => ({state: g.dataset.state, end: !!g.dataset.end,
                       cls: ['server','client','both'].filter(c => g.classList.contains(c)), hosts: g.dataset.hosts})),
            taken: q('#state-diagram .edge.taken').map(g => ({from: g.dataset.from, to: g.dataset.to,
                       hosts: g.dataset.hosts})),
            rows: q('#packet-rows tr:not(.future)').map(tr => ({no: +tr.dataset.no,
                       cells: Array.from(tr.cells).map(td => td.textContent), current: tr.classList.contains('current'),
                       grey: tr.classList.contains('retransmission')})),
            netstat: {server: document.querySelector('#netstat-server pre').textContent,
                      client: document.querySelector('#netstat-client pre').textContent},
            console: {server: q('#console-server pre div').map(d => [d.className, d.textContent]),
                      client: q('#console-client pre div').map(d => [d.className, d.textContent])},
            cause: document.querySelector('#cause').textContent,
          };
        }""")


def expected_state(records: list[dict], upto: int, host: str) -> tuple[str, str | None]:
    """The host's connection state after record ``upto``, and the state it came from (None: none yet).

    Its connection socket's latest state once it has one, else LISTEN while its listener is open.
    """
    conn = listen = None
    history: list[str] = []
    for r in records[: upto + 1]:
        if r["kind"] != "state" or r["host"] != host:
            continue
        if r["remote"] == LISTENER:
            listen = r["to"]
        else:
            conn = r["to"]
        now = conn if conn is not None else ("LISTEN" if listen == "LISTEN" else "CLOSED")
        if not history or history[-1] != now:
            history.append(now)
    if not history:
        return "CLOSED", None
    return history[-1], (history[-2] if len(history) > 1 else "CLOSED")


def netstat_rows(records: list[dict], upto_t: float, host: str) -> list[dict]:
    snap = [r for r in records if r["kind"] == "netstat" and r["host"] == host and r["t"] <= upto_t]
    return snap[-1]["rows"] if snap else []


def moments_of(records: list[dict]) -> list[int]:
    """The records a viewer steps through: all but netstat records and steps' ends."""
    return [i for i, r in enumerate(records) if r["kind"] in MOMENT_KINDS
            and not (r["kind"] == "step" and r["status"] == "ok")]


@pytest.fixture(scope="module")
def seed(seed_run):
    records = load(seed_run / "trace.jsonl")
    return seed_run, records, moments_of(records)


def step_through(browser, run_dir: Path, records: list[dict], moments: list[int], artifacts: Path | None = None,
                 prefix: str = "film") -> dict[str, int]:
    """Press → through every moment of ``run_dir/film.html`` and check the page against the trace at each;
    with ``artifacts``, save screenshots of the handshake, the data and TIME_WAIT. Returns where those were."""
    page = Page(browser, run_dir / "film.html").open()
    assert page.page.text_content("#moment").startswith(f"[0/{len(moments)}]")
    roles = {"thinkpad": "server", "raspberrypi": "client"}
    packets = [i for i, r in enumerate(records) if r["kind"] == "packet"]
    shots = {}
    for n, idx in enumerate(moments):
        page.page.keyboard.press("ArrowRight")
        assert page.moment() == n
        v = page.view()
        where = f"moment {n + 1} ({records[idx]})"

        # the diagram: each host's state box in its colour, green when both are in one state
        states = {h: expected_state(records, idx, h) for h in roles}
        ss, cs = states["thinkpad"][0], states["raspberrypi"][0]
        # CLOSED is drawn twice, as in the RFC: at the top, and at the bottom right for a connection that ended
        box = {h: (st, st == "CLOSED" and came not in (None, "CLOSED", "LISTEN", "SYN_SENT"))
               for h, (st, came) in states.items()}
        coloured = {(s["state"], s["end"]): s["cls"] for s in v["states"] if s["cls"]}
        if box["thinkpad"] == box["raspberrypi"]:
            assert coloured == {box["thinkpad"]: ["both"]}, where
        else:
            assert coloured == {box["thinkpad"]: ["server"], box["raspberrypi"]: ["client"]}, (where, coloured)
        # the transition each host took last is the highlighted edge when the RFC's figure has it (all of
        # the seed's); one it has not (an abort's ESTABLISHED -> CLOSED) lights no edge and says so
        for host, (state, came_from) in states.items():
            if came_from is not None:
                taken = [{"from": e["from"], "to": e["to"]} for e in v["taken"] if host in e["hosts"].split(",")]
                if (came_from, state) in RFC_TRANSITIONS:
                    assert {"from": came_from, "to": state} in taken, (where, v["taken"])
                else:
                    assert taken == [], (where, v["taken"])
                    assert f"{host} ({roles[host]}): {came_from} → {state}" in v["cause"] and \
                        "(not an edge of RFC 9293's diagram" in v["cause"], where
                    if rfc9293.TEXT.get((came_from, state)):  # and where the RFC's text allows it
                        assert f"its text: {rfc9293.TEXT[(came_from, state)]})" in v["cause"], where
                assert f"{host} ({roles[host]}): {came_from} → {state}" in v["cause"], where

        # the packet list: every packet up to now, the newest one highlighted
        seen = [i for i in packets if i <= idx]
        assert [row["no"] for row in v["rows"]] == list(range(1, len(seen) + 1)), where
        if seen:
            last, row = records[seen[-1]], v["rows"][-1]
            assert row["current"] and sum(r["current"] for r in v["rows"]) == 1, where
            no, t, src, dst, proto, length, capture, info = row["cells"]
            assert (float(t), src, dst, proto) == (pytest.approx(last["t"], abs=1e-6),
                                                   last["src"].rsplit(":", 1)[0], last["dst"].rsplit(":", 1)[0], "TCP")
            assert capture == f"{last['host']} {last['dir']}", where
            assert f"[{', '.join(last['flags'])}]" in info and f"Seq={last['seq']}" in info, where
            assert length == str(last["frame_len"]), where
            retrans = "retransmission" in last.get("analysis", [])
            assert row["grey"] == retrans and info.startswith("[TCP Retransmission]") == retrans, where

        # netstat panes: the rows of the newest netstat record, each with its state
        for host, role in roles.items():
            lines = v["netstat"][role].splitlines()
            want = netstat_rows(records, records[idx]["t"], host)
            assert lines[0].startswith("Proto Recv-Q Send-Q") and len(lines) == 1 + len(want), (where, lines, want)
            for line, r in zip(lines[1:], want):
                assert line.split()[3:6] == [r["local"], r["foreign"], r["state"]], (where, line, r)

        # consoles: the command, then what was typed and printed so far
        for host, role in roles.items():
            said = [(("typed" if r["stream"] == "stdin" else r["stream"]), r["text"])
                    for r in records[: idx + 1] if r["kind"] == "console" and r["host"] == host]
            shown = [tuple(d) for d in v["console"][role] if d[0] != "cmd"]
            assert shown == said, where

        if "handshake" not in shots and ss == cs == "ESTABLISHED":
            shots["handshake"] = n
        if "data" not in shots and records[idx]["kind"] == "console" and records[idx]["text"] == "Bye" \
                and records[idx]["stream"] == "stdout":
            shots["data"] = n
        if "time_wait" not in shots and "TIME_WAIT" in (ss, cs):
            shots["time_wait"] = n
        for name, at in shots.items():
            if at == n and artifacts is not None:
                page.page.screenshot(path=str(artifacts / f"{prefix}-{name}.png"))
    assert page.errors == [] and page.requests == []
    return shots


def test_stepping_through_the_seed_run_matches_the_trace(browser, seed, artifacts):
    run_dir, records, moments = seed
    shots = step_through(browser, run_dir, records, moments, artifacts)
    assert set(shots) == {"handshake", "data", "time_wait"}
    for name in shots:
        assert (artifacts / f"film-{name}.png").stat().st_size > 20_000
    print(f"screenshots: {artifacts}")


def test_the_url_fragment_keeps_the_position(browser, seed):
    run_dir, records, moments = seed
    fin_in = next(n for n, i in enumerate(moments) if records[i]["kind"] == "packet"
                  and "FIN" in records[i]["flags"] and records[i]["dir"] == "in")
    page = Page(browser, run_dir / "film.html").open(f"#m={fin_in + 1}")
    assert page.moment() == fin_in
    assert "FIN" in page.page.text_content("#moment")
    page.page.keyboard.press("ArrowRight")
    assert page.page.evaluate("location.hash") == f"#m={fin_in + 2}"
    t = records[moments[fin_in]]["t"] + 0.0004
    page.open(f"#t={t:.4f}")
    assert page.moment() == max(n for n, i in enumerate(moments) if records[i]["t"] <= float(f"{t:.4f}"))
    assert page.errors == [] and page.requests == []


def test_play_pause_speed_and_slow_motion(browser, seed):
    run_dir, records, moments = seed
    page = Page(browser, run_dir / "film.html").open()
    p = page.page
    p.keyboard.press("Control+=")  # the browser's zoom, not the film's speed
    assert p.input_value("#speed") == "1"
    for _ in range(4):
        p.keyboard.press("+")  # 1x -> 20x
    assert p.input_value("#speed") == "20"
    p.keyboard.press("s")
    assert p.is_checked("#slow")
    # every moment the page shows while playing, in order
    p.evaluate("""() => { window.seen = [];
      new MutationObserver(() => window.seen.push(Number(document.body.dataset.moment)))
        .observe(document.body, {attributes: true, attributeFilter: ['data-moment']}); }""")
    p.keyboard.press(" ")
    p.wait_for_function("Number(document.body.dataset.moment) >= 12", timeout=15_000)
    p.keyboard.press(" ")
    stopped = page.moment()
    p.wait_for_timeout(500)
    assert page.moment() == stopped and p.text_content("#play") == "▶"
    # slow motion gives every moment a slot, also moments at one time (a segment out and in): none skipped
    raw = p.evaluate("window.seen")
    seen = [m for n, m in enumerate(raw) if n == 0 or m != raw[n - 1]]
    assert seen[0] in (-1, 0) and seen == list(range(seen[0], stopped + 1)), seen
    # paused between two moments, the link keeps that very position
    p.keyboard.press("ArrowRight")
    p.keyboard.press("ArrowRight")
    p.evaluate("document.getElementById('scrub').dispatchEvent(new Event('input'))")
    link = p.evaluate("location.hash")
    at = page.moment()
    page.open(link)
    assert page.moment() == at and p.evaluate("location.hash") == link
    p.keyboard.press("End")
    assert page.moment() == len(moments) - 1
    assert page.errors == [] and page.requests == []


def test_film_html_is_self_contained(seed):
    run_dir, _, _ = seed
    text = (run_dir / "film.html").read_text()
    assert "<script src" not in text and "<link" not in text and "@import" not in text
    assert "https://" not in text and "http://" not in text.replace('xmlns="http://www.w3.org/2000/svg"', "")


def test_netstat_timers_count_down_between_netstat_records(browser, seed):
    run_dir, records, _ = seed
    tw = next(r for r in records if r["kind"] == "netstat" and any(x["timer"].startswith("timewait") for x in r["rows"]))
    page = Page(browser, run_dir / "film.html")
    for later in (0.25, 0.5, 0.75):
        now = tw["t"] + later
        page.open(f"#t={now:.9f}")
        snap = [r for r in records if r["kind"] == "netstat" and r["host"] == tw["host"] and r["t"] <= now][-1]
        row = next(x for x in snap["rows"] if x["timer"].startswith("timewait"))
        left = float(row["timer"].split("(")[1].split("/")[0]) - (now - snap["t"])
        shown = page.page.text_content("#netstat-server pre")
        got = float(re.search(r"timewait \(([0-9.]+)/", shown).group(1))
        assert abs(got - left) <= 0.006, (now, got, left)
    assert page.errors == [] and page.requests == []
