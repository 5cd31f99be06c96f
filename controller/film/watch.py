"""``tcplab watch``: the terminal film of a run while it is being filmed.

The controller appends every record to ``runs/<id>/trace.partial.jsonl`` as it arrives and writes
``trace.jsonl`` when the run ends (docs/trace.md). The watch waits for a run directory, follows its
partial trace with the replay's layout (controller/film/term.py), and once ``trace.jsonl`` appears
draws the finished run's last frame and exits: 0 when every step succeeded, 1 when a step failed,
when the run directory vanished, or when the process given by ``until_pid`` (``make film``'s
ansible-playbook) ended with no finished run. 130 on Ctrl-C.

Which run: with ``since_now`` only a directory created after the watch started (what ``make film``
wants); otherwise a run still going (its partial trace written in the last ``FRESH_S`` seconds) or
else the next new one.

The clock runs in real time between records: the film's time is the newest record's ``t``, or,
when later, the wall clock less the smallest (wall clock - ``t``) seen at any read, so the netstat
timers count down while nothing new arrives.
"""

from __future__ import annotations

import re
import signal
import sys
import threading
import time
from pathlib import Path

import structlog
from rich.console import Console, RenderableType
from rich.live import Live

from controller import scenario as scenarios
from controller.film import lines, model, term
from controller.film.tracefile import NotATrace, PartialTrace, ordered, read_lines
from controller.film.visible import guard, visible
from controller.trace import StepStatus, TraceIndex
from tcplab import logs, pidfile

FRESH_S = 30.0
POLL_S = 0.1
log = structlog.get_logger(__name__)


def scenario_steps(run_dir: Path, scenario_name: str, steps: int) -> int | None:
    """``steps`` when ``run_dir`` is a run of the scenario called ``scenario_name``, else None."""
    stem = re.sub(r"[^A-Za-z0-9_.-]", "_", scenario_name)
    m = re.fullmatch(r"\d{8}-\d{6}-(.+?)(-\d+)?", run_dir.name)
    return steps if m and stem in (m.group(1), m.group(1) + (m.group(2) or "")) else None


def find_run(runs: Path, before: set[str] | None) -> Path | None:
    """The newest run directory to follow: a new one (not in ``before``), else, when ``before`` is
    None, one whose partial trace is fresh."""
    try:
        dirs = sorted((d for d in runs.iterdir() if d.is_dir()), key=lambda d: (d.stat().st_mtime, d.name))
    except FileNotFoundError:
        return None
    for d in reversed(dirs):
        trace, partial = d / "trace.jsonl", d / "trace.partial.jsonl"
        if before is not None and d.name in before:
            continue
        if before is not None and (partial.exists() or trace.exists()):
            return d
        if before is None and partial.exists() and not trace.exists() \
                and time.time() - partial.stat().st_mtime < FRESH_S:
            return d
    return None


class Watcher:
    def __init__(self, runs: Path, console: Console, since_now: bool = False, until_pid: int | None = None,
                 total_steps: int | None = None, scenario: tuple[str, int] | None = None,
                 stop: threading.Event | None = None):
        self.runs, self.console = Path(runs), console
        self.until_pid, self.total, self.scenario = until_pid, total_steps, scenario
        self.before: set[str] | None = None
        if since_now:
            self.before = {d.name for d in self.runs.iterdir()} if self.runs.is_dir() else set()
        self.stop = stop or threading.Event()
        self.plain = not console.is_terminal or console.is_dumb_terminal
        self.printed: set[int] = set()
        self.message = ""
        self.skipped = 0
        self._film: model.Film | None = None  # the film of the records drawn last
        self._drawn: list[dict] | TraceIndex | None = None  # those records

    def _pid_ended(self) -> bool:
        return self.until_pid is not None and not pidfile.running(self.until_pid)

    def _show(self, live: Live | None, frame: RenderableType, text: str = "") -> None:
        if live is not None:
            live.update(guard(frame), refresh=True)
        elif text:
            self.console.print(visible(text), highlight=False, markup=False, emoji=False, soft_wrap=True)
            self.console.file.flush()

    def run(self) -> int:
        live = None if self.plain else Live(console=self.console, auto_refresh=False, redirect_stdout=False,
                                            redirect_stderr=False)
        try:
            if live is not None:
                live.start()
            run_dir = self._wait_for_run(live)
            code = 1 if run_dir is None else self._follow(run_dir, live)
        finally:
            if live is not None:
                live.stop()
        if self.message:
            self.console.print(visible(self.message), highlight=False, markup=False, soft_wrap=True)
        if self.skipped:
            log.warning("partial_trace_lines_skipped", runs=str(self.runs), lines=self.skipped)
        return code

    def _wait_for_run(self, live: Live | None) -> Path | None:
        self._show(live, term.waiting(f"waiting for a run in {self.runs}/ …"), f"waiting for a run in {self.runs}/")
        while not self.stop.is_set():
            run_dir = find_run(self.runs, self.before)
            if run_dir is not None:
                return run_dir
            if self._pid_ended():
                self.message = f"tcplab watch: process {self.until_pid} ended before a run started"
                return None
            self.stop.wait(POLL_S)
        self.message = "tcplab watch: stopped"
        return None

    def _follow(self, run_dir: Path, live: Live | None) -> int:
        partial, records, offset = PartialTrace(run_dir / "trace.partial.jsonl"), [], None
        in_order: list[dict] = []
        total = self.total
        if self.scenario is not None:
            total = max(total or 0, scenario_steps(run_dir, *self.scenario) or 0) or None
        try:
            while not self.stop.is_set():
                done = (run_dir / "trace.jsonl").is_file()
                ended = self._pid_ended()        # looked at before the last read, so nothing is missed
                new = partial.read()
                if new:  # sorted and filmed again only when something came: a long run stays cheap
                    records += new
                    in_order = ordered(records)
                    seen = time.time() - max(r["t"] for r in new)
                    offset = seen if offset is None else min(offset, seen)
                if done:
                    if self.plain and new:
                        self._draw(run_dir, in_order, None, total, None, "")
                    return self._finish(run_dir, live, total)
                if not run_dir.is_dir():
                    self.message = f"tcplab watch: {run_dir} vanished"
                    return 1
                if ended:
                    self.message = f"tcplab watch: process {self.until_pid} ended; {run_dir} has no trace.jsonl"
                    return 1
                now = None if offset is None else time.time() - offset
                self._draw(run_dir, in_order, now, total, live, "live")
                self.stop.wait(POLL_S)
            self.message = "tcplab watch: stopped"
            return 1
        finally:
            partial.close()
            self.skipped = partial.skipped

    def _draw(self, run_dir: Path, records: list[dict] | TraceIndex, now: float | None, total: int | None,
              live: Live | None, note: str) -> model.Film | None:
        try:
            if self._film is None or self._drawn is not records:
                self._film, self._drawn = model.build(records), records
            film = self._film
        except (ValueError, KeyError):
            self._show(live, term.waiting(f"{run_dir.name}: waiting for both hosts' records …", run_dir.name))
            return None
        t = max([records[-1]["t"]] + ([now] if now is not None else []))
        if live is not None:
            size = self.console.size
            live.update(guard(term.snapshot(film, t, run=run_dir.name, total_steps=total, note=note,
                                            height=size.height - 1, width=size.width)), refresh=True)
        else:
            for i in film.moments:
                n = records[i].get("_n", i)
                if n not in self.printed:
                    self.printed.add(n)
                    self._show(None, None, lines.line(film, i, total))
        return film

    def _finish(self, run_dir: Path, live: Live | None, total: int | None) -> int:
        try:
            records = TraceIndex(read_lines(run_dir / "trace.jsonl"))
        except NotATrace as e:
            self.message = f"tcplab watch: {e}"
            return 1
        failed = records.steps(StepStatus.FAILED)
        note = f"step {failed[0]['index']} failed" if failed else "finished"
        if self.plain:  # the finished trace numbers the records afresh: print only the end
            self.console.print(visible(f"{run_dir.name}: {note}"), highlight=False, markup=False, soft_wrap=True)
        elif self._draw(run_dir, records, None, total, live, note) is None:
            self.message = f"tcplab watch: {run_dir} has a trace of fewer than two hosts"
            return 1
        return 1 if failed else 0


def main(runs: str, since_now: bool = False, until_pid: int | None = None, steps: int | None = None,
         scenario_file: str | None = None) -> int:
    """``tcplab watch``: 0 the run finished, 1 it failed or never finished, 2 bad input, 130 Ctrl-C."""
    logs.configure_cli()  # events on stderr, the film on stdout; routine ones are debug
    known = None
    if scenario_file is not None:
        try:
            scn = scenarios.load(scenario_file)
        except scenarios.ScenarioError as e:
            print(f"tcplab: {e}", file=sys.stderr)
            return 2
        known = (scn.name, len(scn.steps))
    if steps is not None and steps < 1:
        print(f"tcplab: --steps {steps} must be at least 1", file=sys.stderr)
        return 2
    stop = threading.Event()
    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set()) if main_thread else None
    try:
        return Watcher(Path(runs), Console(), since_now, until_pid, steps, known, stop).run()
    except KeyboardInterrupt:
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)
