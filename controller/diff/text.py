"""``tcplab diff``'s two outputs: plain text for a person, JSON for a program (docs/diff.md)."""

from __future__ import annotations

from controller.diff.compare import WHAT, Row, RunDiff, StepDiff
from controller.diff.digest import Item, RunDigest

NOTES = {"only_a": "only in A", "only_b": "only in B", "changed": "changed", "time": "time"}
WORDS = {"step": "step", "only_a": "only in A", "only_b": "only in B", "changed": "changed", "time": "time"}


def _when(x: Item) -> str:
    return f"+{x.t:.3f}" + (f"→+{x.t2:.3f}" if x.t2 is not None else "")


def _label(x: Item) -> str:
    if x.kind == "segment":
        extra = [a.replace("_", " ") for a in x.data["analysis"]]
        if x.data["captured_by"] != "both":
            extra.append(f"captured by the {x.data['captured_by']}")
        return x.label + (f" ({', '.join(extra)})" if extra else "")
    return x.label


def _who(r: Row) -> str:
    x = r.a or r.b
    return x.data["direction"] if r.kind == "segment" else r.role


def _width(rows: list[Row]) -> int:
    return max([len(_label(x)) for r in rows for x in (r.a, r.b) if x] + [10])


def row_text(r: Row, width: int, tol: float) -> str:
    left = f"{_label(r.a):<{width}} {_when(r.a):>15}" if r.a else " " * (width + 16)
    right = f"{_label(r.b):<{width}} {_when(r.b):>15}" if r.b else " " * (width + 16)
    note = NOTES.get(r.what or "", "")
    if r.dt is not None and abs(r.dt) > tol:
        note = (note + ", " if r.what == "changed" else "") + f"B {r.dt:+.3f} s"
    mark = "!" if r.what else " "
    return f"{mark} {r.kind:<8} {_who(r):<14} {left} | {right}  {note}".rstrip()


def _step_heading(s: StepDiff) -> str:
    d = s.a or s.b
    title = "before the first step" if s.index == 0 else f"Step {s.index} {d.action} on {d.target}"
    status = {x: {"start": "not finished", "": "-"}.get(getattr(s, x).status, getattr(s, x).status)
              if getattr(s, x) else "absent" for x in ("a", "b")}
    if s.a and s.b and (s.a.action, s.a.target) != (s.b.action, s.b.target):
        title += f" (B: {s.b.action} on {s.b.target})"
    line = f"{title}: A {status['a']}, B {status['b']}" if s.index else title
    return ("! " if s.what else "") + line


def _run_line(name: str, d: RunDigest) -> str:
    return f"{name}: {d.path} — server {d.hosts.get('server')}, client {d.hosts.get('client')}"


def summary(diff: RunDiff) -> str:
    counts = diff.count()
    if not counts:
        return "no differences"
    total = sum(counts.values())
    return f"{total} difference{'s' if total != 1 else ''}: " + ", ".join(
        f"{counts[w]} {WORDS[w]}" for w in WHAT if w in counts)


def render(diff: RunDiff, everything: bool = False) -> str:
    out = [_run_line("A", diff.a), _run_line("B", diff.b),
           f"Times are seconds after each step's start (a segment: left→arrived); they differ when A and B are "
           f"more than {diff.tolerance_s:g} s apart. '!' marks a difference.", ""]
    for s in diff.steps:
        rows = s.rows if everything else s.differences
        if s.index == 0 and not s.rows:
            continue
        out.append(_step_heading(s))
        for side in ("a", "b"):
            step = getattr(s, side)
            if step is not None and step.error and s.what:
                out.append(f"    {side.upper()}'s error: {step.error}")
        if rows:
            width = _width(rows)
            out.append(f"    {'':<8} {'':<14} {'A':<{width + 16}} | B")
            out += ["  " + row_text(r, width, diff.tolerance_s) for r in rows]
        else:
            out.append(f"  the same: {len(s.rows)} item{'s' if len(s.rows) != 1 else ''}"
                       + (f" ({_kinds(s)})" if s.rows else ""))
        out.append("")
    out.append(summary(diff))
    return "\n".join(out) + "\n"


def _kinds(s: StepDiff) -> str:
    seen: dict[str, int] = {}
    for r in s.rows:
        seen[r.kind] = seen.get(r.kind, 0) + 1
    return ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in seen.items())


def difference_text(s: StepDiff, r: Row) -> str:
    where = f"step {s.index}" if s.index else "before the first step"
    x = r.a or r.b
    base = f"{where}: {r.kind} {_who(r)} {_label(x)}"
    if r.what == "only_a":
        return f"{base} at {_when(x)} s only in A"
    if r.what == "only_b":
        return f"{base} at {_when(x)} s only in B"
    if r.what == "changed":
        return f"{where}: {r.kind} {_who(r)} A {_label(r.a)} but B {_label(r.b)}"
    return f"{base}: A at {_when(r.a)} s, B at {_when(r.b)} s ({r.dt:+.3f} s)"


def as_json(diff: RunDiff) -> dict:
    differences = []
    for s in diff.steps:
        if s.what:
            a, b = (f"{x.action} on {x.target}: {x.status}" if x else "absent" for x in (s.a, s.b))
            differences.append({"step": s.index, "what": "step", "kind": "step", "role": None,
                                "a": s.a.as_dict() if s.a else None, "b": s.b.as_dict() if s.b else None,
                                "text": f"step {s.index}: A {a}, B {b}"})
        for r in s.differences:
            differences.append({"step": s.index, **r.as_dict(), "text": difference_text(s, r)})
    return {
        "a": {"path": diff.a.path, "run": diff.a.run, "hosts": diff.a.hosts},
        "b": {"path": diff.b.path, "run": diff.b.run, "hosts": diff.b.hosts},
        "tolerance_s": diff.tolerance_s, "same": diff.same, "counts": diff.count(),
        "steps": [{"index": s.index, "what": s.what or "same",
                   "a": s.a.as_dict() if s.a else None, "b": s.b.as_dict() if s.b else None,
                   "rows": [r.as_dict() for r in s.rows]} for s in diff.steps],
        "differences": differences,
    }
