"""One run: the directory, the trace and pcaps being written, and what each host has shown so far.

Probe events come in with the probe's monotonic clock (``t_ns``); a run maps them onto the
controller's clock through the probe's :class:`~controller.clock.ClockEstimate` and writes
``t`` as seconds since the run started. Events from before the start are not part of the film.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from controller.captures import Captures
from controller.clock import ClockEstimate, causal_shift, write_exchanges
from controller.scenario import Expectation
from controller.trace import PcapFiles, Trace

LISTENER_REMOTE = "0.0.0.0:*"
_FIELDS = {
    "state": ("local", "remote", "from", "to", "source"),
    "packet": ("dir", "src", "dst", "flags", "seq", "ack", "len", "payload", "win", "frame_len"),
    "console": ("text", "stream"),
    "netstat": ("rows",),
    "shaper": ("backend", "delay_ms", "loss_pct", "cleared", "counters"),
    "kernel": ("event", "local", "remote", "state"),
}


def new_run_dir(runs_dir: Path, name: str) -> Path:
    runs_dir.mkdir(parents=True, exist_ok=True)
    base = f"{time.strftime('%Y%m%d-%H%M%S')}-{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}"
    for n in range(1, 1000):
        path = runs_dir / (base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise RuntimeError(f"no free run directory for {base} in {runs_dir}")


class Run:
    def __init__(self, run_dir: Path, hosts: tuple[str, ...]):
        self.dir = run_dir
        self.id = run_dir.name
        self.hosts = hosts
        self.start_ns = time.monotonic_ns()
        self.start_wall_ns = time.time_ns()  # the same instant as wall-clock time, for merged.pcapng
        self.trace = Trace(run_dir)
        self.pcaps = PcapFiles(run_dir)
        self.pcaps.ensure(hosts)
        self.captures = Captures(run_dir, hosts)  # <host>.pcapng, the analysis, merged.pcapng
        self.changed = asyncio.Condition()
        self.backends: dict[str, str | None] = {}
        self.shaper_counters: dict[str, dict] = {}  # what went through each host's delay, read at its clear
        self.packets = {h: 0 for h in hosts}
        self.capture_stats: dict[str, dict] = {}
        self._stamped: list[tuple[dict, int]] = []  # (record, probe t_ns): mapped again at the end

    def t(self, controller_ns: int) -> float:
        return round((controller_ns - self.start_ns) / 1e9, 9)

    def now(self) -> float:
        return self.t(time.monotonic_ns())

    async def add_event(self, host: str, body: dict, clock: ClockEstimate) -> None:
        kind = body.get("kind")
        if kind == "capture_stats" and host in self.hosts:  # the kernel's counters: for run.json
            self.capture_stats[host] = {k: v for k, v in body.items() if k not in ("kind", "t_ns")}
            return
        if kind not in _FIELDS or not isinstance(body.get("t_ns"), int) or host not in self.hosts:
            return
        t = self.t(clock.to_controller(body["t_ns"]))
        if t < 0:
            return
        rec = {"t": t, "host": host, "kind": kind}
        rec.update({k: body[k] for k in _FIELDS[kind] if k in body})
        self._stamped.append((rec, body["t_ns"]))
        if kind == "packet":
            if isinstance(body.get("raw"), bytes) and isinstance(body.get("wall_ns"), int):
                self.pcaps.write(host, body["raw"], body["wall_ns"])
                self.captures.add(host, rec, body["raw"], body["wall_ns"])
            rec["analysis"] = []  # filled in by finish_captures
            self.packets[host] += 1
        elif kind == "shaper" and body.get("backend"):  # a later clear keeps the record of what was used
            self.backends[host] = body["backend"]
        elif kind == "shaper" and isinstance(body.get("counters"), dict) and body["counters"]:
            self.shaper_counters[host] = body["counters"]
        await self.add(rec)

    async def add(self, rec: dict) -> None:
        self.trace.add(rec)
        async with self.changed:
            self.changed.notify_all()

    # --- what has been seen ------------------------------------------------------------------
    def states_since(self, host: str, since: float, listener: bool | None = None) -> list[dict]:
        out = []
        for r in self.trace.records:
            if r["kind"] != "state" or r["host"] != host or r["t"] < since:
                continue
            is_listener = r.get("remote") == LISTENER_REMOTE
            if listener is None or listener == is_listener:
                out.append(r)
        return out

    def met(self, e: Expectation, since: float) -> bool:
        if e.state is not None:
            listener = e.state == "LISTEN"
            return any(r["to"] == e.state for r in self.states_since(e.host, since, listener))
        return any(r["kind"] == "console" and r["host"] == e.host and r.get("stream") == "stdout"
                   and r["text"].strip() == e.text and r["t"] >= since for r in self.trace.records)

    def observed(self, host: str, since: float) -> str:
        """What ``host`` did since ``since``, in words, for a failed step's message."""
        states = [f"{r['from']}->{r['to']}" for r in self.states_since(host, since, listener=False)]
        lines = [r["text"].strip() for r in self.trace.records
                 if r["kind"] == "console" and r["host"] == host and r["t"] >= since and r.get("stream") == "stdout"]
        parts = [f"states {', '.join(states)}" if states else "no connection state change"]
        if lines:
            parts.append("printed " + ", ".join(repr(x) for x in lines[-3:]))
        return f"{host}: " + "; ".join(parts)

    async def wait_for(self, expect: tuple[Expectation, ...], since: float, timeout: float) -> list[Expectation]:
        """Wait until every expectation is met; return the ones still unmet at the timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        async with self.changed:
            while True:
                unmet = [e for e in expect if not self.met(e, since)]
                left = deadline - asyncio.get_running_loop().time()
                if not unmet or left <= 0:
                    return unmet
                try:
                    await asyncio.wait_for(self.changed.wait(), timeout=left)
                except asyncio.TimeoutError:
                    pass

    def align(self, clocks: dict[str, ClockEstimate] | None = None) -> dict[str, dict]:
        """Map every event again with each host's final clock fit, then tighten with the packets.

        During the run an event is mapped with the estimate known when it arrives; the final fit
        (offset and drift from every exchange of the run, controller/clock.py) maps it at its own
        time. Then the first host is the reference and every other host's records move by the
        smallest shift that makes no segment arrive before it left (clock.causal_shift), bounded
        by the ping estimates. Returns per host the estimate at the run's start and the
        correction, for run.json (``hosts.<h>.clock``); the exchanges go to ``clock.jsonl``.
        """
        clocks = {h: c for h, c in (clocks or {}).items() if h in self.hosts}
        for rec, t_ns in self._stamped:
            if rec["host"] in clocks:
                rec["t"] = self.t(clocks[rec["host"]].to_controller(t_ns))
        out: dict[str, dict] = {h: clocks[h].as_dict(self.start_ns) for h in self.hosts if h in clocks}
        write_exchanges(self.dir / "clock.jsonl", clocks, since_ns=self.start_ns - 60_000_000_000)
        ref = self.hosts[0] if self.hosts else None
        for host in self.hosts[1:]:
            u = [out.get(h, {}).get("uncertainty_ns") for h in (ref, host)]
            bound = None if None in u else (u[0] + u[1]) / 1e9
            fix = causal_shift(self.trace.records, ref, host, bound_s=bound)
            out.setdefault(host, {})["causal"] = fix
            if fix["shift_s"]:
                for r in self.trace.records:
                    if r["host"] == host:
                        r["t"] = round(r["t"] + fix["shift_s"], 9)
        return out

    def finish_captures(self) -> None:
        """After align(), before the trace is finished: packet analysis and merged.pcapng."""
        try:
            self.captures.finish(self.start_wall_ns)
        except Exception as e:  # the trace must still be written
            import structlog
            structlog.get_logger("controller").error("captures_not_finished", error=repr(e))

    def close(self) -> None:
        self.captures.close()
        self.pcaps.close()
        self.trace.close()
