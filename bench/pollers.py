"""The baselines of the completeness row: a socket-table command polled in a lab host's namespace.

``Poller(host, ns, "netstat", 1.0)`` runs ``netstat -nao`` every second (the seed's ``watch -n 1
netstat -nao``), ``Poller(host, ns, "ss", 0.1)`` ``ss -tan`` ten times a second, each through
``nsenter --net`` into the namespace, on a fixed schedule (a poll that overruns skips the missed
ticks, like ``watch``). Between two polls every socket of the lab port whose state differs makes a
change record: ``{host, local, remote, to, t_ns, start_ns}``, ``to`` in the trace's names, a
socket gone ``CLOSED``; ``t_ns`` is when the command's output was complete (when ``watch`` would
show it), ``start_ns`` when it was started, both CLOCK_MONOTONIC (``time.monotonic_ns()``, the
clock of the controller and of tracefs ``mono`` on this machine: one kernel, no time namespace).
"""

from __future__ import annotations

import subprocess
import threading
import time

from tcplab import tcpstates

COMMANDS = {"netstat": ["netstat", "-nao"], "ss": ["ss", "-tan"]}
_SS = {"ESTAB": "ESTABLISHED", "UNCONN": "CLOSED"}


def parse(kind: str, text: str, port: int) -> dict[tuple[str, str], str]:
    """(local, remote) -> trace state name of every TCP socket of ``port`` in one output."""
    out = {}
    suffix = f":{port}"
    for line in text.splitlines():
        f = line.split()
        if kind == "netstat":
            if len(f) < 6 or f[0] != "tcp":
                continue
            local, remote, state = f[3], f[4], f[5]
        else:
            if len(f) < 5 or f[0] == "State":
                continue
            state, local, remote = _SS.get(f[0], f[0].replace("-", "_")), f[3], f[4]
        if not (local.endswith(suffix) or remote.endswith(suffix)):
            continue
        try:
            out[(local, remote)] = tcpstates.name(state)
        except ValueError:
            continue
    return out


class Poller:
    def __init__(self, host: str, ns: str, kind: str, period_s: float, port: int):
        self.host, self.ns, self.kind, self.period, self.port = host, ns, kind, period_s, port
        self.changes: list[dict] = []
        self.polls = 0
        self.durations: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"poll-{kind}-{host}")

    @property
    def name(self) -> str:
        return f"{' '.join(COMMANDS[self.kind])} every {self.period:g} s"

    def start(self) -> "Poller":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        cmd = ["nsenter", f"--net=/run/netns/{self.ns}", *COMMANDS[self.kind]]
        seen: dict[tuple[str, str], str] = {}
        next_at = time.monotonic()
        while not self._stop.is_set():
            start = time.monotonic_ns()
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            end = time.monotonic_ns()
            self.polls += 1
            self.durations.append(end - start)
            now = parse(self.kind, res.stdout, self.port)
            for key, state in now.items():
                if seen.get(key) != state:
                    self.changes.append({"host": self.host, "local": key[0], "remote": key[1], "to": state,
                                         "t_ns": end, "start_ns": start})
            for key in seen.keys() - now.keys():
                self.changes.append({"host": self.host, "local": key[0], "remote": key[1], "to": "CLOSED",
                                     "t_ns": end, "start_ns": start})
            seen = now
            next_at += self.period
            late = time.monotonic() - next_at
            if late > 0:
                next_at += (int(late / self.period) + 1) * self.period
            self._stop.wait(max(0.0, next_at - time.monotonic()))
