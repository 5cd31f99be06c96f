"""Two run digests side by side: what is the same, what differs.

What counts as the same (docs/diff.md):

- steps are matched by their index; a step's action, target (by role) and status must be equal;
- within a step, each role's items of one kind (its states, its kernel events, its console lines,
  its shaping; for segments, those it sent) are aligned as sequences by their ``key``: the most
  pairs of equal keys in order, and among those the least total time difference (so one extra
  retransmission is one extra row, not a shifted tail, and it is the right one of several copies);
- an aligned pair must have equal ``attrs`` (a segment's Wireshark analysis and which captures saw
  it; a shaper's backend, delay and loss) and times within the tolerance, each time counted from
  its own run's step start (a segment's departure and arrival both);
- addresses, ports, host names, absolute sequence numbers, window sizes and a state record's
  source (tracepoint or inet_diag) are never compared.
"""

from __future__ import annotations

from dataclasses import dataclass

from controller.diff.digest import ROLES, Item, RunDigest, StepDigest

KINDS = ("shaper", "state", "segment", "kernel", "console")
WHAT = ("step", "only_a", "only_b", "changed", "time")  # the kinds of difference, in report order


@dataclass
class Row:
    """One line of the side-by-side view: an item of A, of B, or an aligned pair."""
    kind: str
    role: str
    a: Item | None
    b: Item | None
    what: str | None          # None: the same; else one of WHAT
    dt: float | None = None   # b - a of the time that differs most, when both are there

    def as_dict(self) -> dict:
        return {"kind": self.kind, "role": self.role, "what": self.what or "same",
                "a": self.a.as_dict() if self.a else None, "b": self.b.as_dict() if self.b else None,
                **({"dt": round(self.dt, 6)} if self.dt is not None else {})}


@dataclass
class StepDiff:
    index: int
    a: StepDigest | None
    b: StepDigest | None
    what: str | None          # "step" when the step itself differs (missing, other action, status)
    rows: list[Row]

    @property
    def differences(self) -> list[Row]:
        return [r for r in self.rows if r.what]


@dataclass
class RunDiff:
    a: RunDigest
    b: RunDigest
    tolerance_s: float
    steps: list[StepDiff]

    def count(self) -> dict[str, int]:
        out = {w: 0 for w in WHAT}
        for s in self.steps:
            out["step"] += s.what is not None
            for r in s.differences:
                out[r.what] += 1
        return {w: n for w, n in out.items() if n}

    @property
    def same(self) -> bool:
        return not self.count()


def compare(a: RunDigest, b: RunDigest, tolerance_s: float) -> RunDiff:
    indexes = sorted({s.index for s in a.steps} | {s.index for s in b.steps})
    return RunDiff(a, b, tolerance_s, [_step(i, a.step(i), b.step(i), tolerance_s) for i in indexes])


def _step(index: int, sa: StepDigest | None, sb: StepDigest | None, tol: float) -> StepDiff:
    what = None
    if sa is None or sb is None or (sa.action, sa.target, sa.status) != (sb.action, sb.target, sb.status):
        what = "step"
    rows = []
    for kind in KINDS:
        for role in ROLES:
            ia = [x for x in (sa.items if sa else []) if x.kind == kind and x.role == role]
            ib = [x for x in (sb.items if sb else []) if x.kind == kind and x.role == role]
            rows += _align(kind, role, ia, ib, tol)
    return StepDiff(index, sa, sb, what, rows)


def _align(kind: str, role: str, ia: list[Item], ib: list[Item], tol: float) -> list[Row]:
    """The alignment with the most pairs of equal keys, and among those the least total time
    difference (so a missing copy among identical retransmissions is the one whose neighbours
    keep their times). A small dynamic programme: the sequences are a step's items of one kind."""
    m, n = len(ia), len(ib)
    inf = (m + n + 1, 0.0)
    cost = [[inf] * (n + 1) for _ in range(m + 1)]
    cost[0] = [(j, 0.0) for j in range(n + 1)]
    for i in range(1, m + 1):
        cost[i][0] = (i, 0.0)
        for j in range(1, n + 1):
            skip_a, skip_b = cost[i - 1][j], cost[i][j - 1]
            best = min((skip_a[0] + 1, skip_a[1]), (skip_b[0] + 1, skip_b[1]))
            if ia[i - 1].key == ib[j - 1].key:
                d = cost[i - 1][j - 1]
                best = min(best, (d[0], d[1] + abs(ib[j - 1].t - ia[i - 1].t)))
            cost[i][j] = best
    rows: list[Row] = []
    i, j = m, n
    while i or j:
        here = cost[i][j]
        if i and j and ia[i - 1].key == ib[j - 1].key and \
                here == (cost[i - 1][j - 1][0], cost[i - 1][j - 1][1] + abs(ib[j - 1].t - ia[i - 1].t)):
            rows.append(_pair(kind, role, ia[i - 1], ib[j - 1], tol))
            i, j = i - 1, j - 1
        elif i and here == (cost[i - 1][j][0] + 1, cost[i - 1][j][1]):
            rows.append(Row(kind, role, ia[i - 1], None, "only_a"))
            i -= 1
        else:
            rows.append(Row(kind, role, None, ib[j - 1], "only_b"))
            j -= 1
    rows.reverse()
    return rows


def _pair(kind: str, role: str, x: Item, y: Item, tol: float) -> Row:
    deltas = [y.t - x.t]
    if x.t2 is not None and y.t2 is not None:
        deltas.append(y.t2 - x.t2)
    dt = max(deltas, key=abs)
    if x.attrs != y.attrs:
        return Row(kind, role, x, y, "changed", dt)
    return Row(kind, role, x, y, "time" if abs(dt) > tol else None, dt)
