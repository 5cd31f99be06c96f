"""The table of ``tcplab doctor``: one column per lab host, one row per thing the lab needs.

Pure formatting of the reports :mod:`probe.doctor` writes (no I/O); the tracepoints' fields follow the
table, one line per tracepoint, since they are too long for a cell.
"""

from __future__ import annotations

from typing import Mapping

WIDTH = 34  # a host's column


def _yes(check: Mapping | None) -> str:
    if not check:
        return "?"
    if check.get("ok") is None:
        return f"not tried ({check.get('detail', '')})"
    return "yes" if check["ok"] else f"no: {check.get('detail') or '?'}"


def _tc(k: Mapping, kind: str) -> str:
    tc = k["tc"]
    module = k["modules"].get(kind, "?")
    if not tc.get("tried"):
        return f"module {module} (not tried: {tc.get('detail', '')})"
    cell = _yes(tc.get(kind)).replace("Error: ", "").replace("Specified qdisc kind is unknown.", "kind unknown")
    return cell if module == "no-modules" else f"{cell} (module {module})"


def _clock(c: Mapping) -> str:
    sync = {True: "synchronised", False: "NOT synchronised", None: "sync unknown"}[c.get("synchronised")]
    return f"{c.get('source') or '?'}, {sync}"


def _tracefs(t: Mapping) -> str:
    if not t.get("ok"):
        return f"no: {t.get('detail') or '?'}"
    hp = t.get("header_page", {})
    return f"yes (page header {hp.get('timestamp_size')}+{hp.get('commit_size')}, data at {hp.get('data_offset')})"


def _tracepoint(tp: Mapping | None) -> str:
    if not tp or not tp.get("present"):
        return "MISSING"
    if tp.get("missing"):
        return f"lacks {', '.join(tp['missing'])}"
    return f"yes ({len(tp['fields'])} fields)"


def rows(r: Mapping) -> list[tuple[str, str]]:
    """(label, cell) of one host's report, in table order."""
    if "error" in r:
        return [("can run the lab", "UNKNOWN"), ("problem", r["error"])]
    k, v = r["kernel"], r["verdict"]
    out = [("can run the lab", "yes" if v["can_run"] else "NO"),
           ("kernel", f"{k['release']} {k['machine']}"),
           ("shaping backend", v["backend"] or "none"),
           ("  tc prio", _tc(k, "prio")), ("  tc netem", _tc(k, "netem")), ("  tc u32", _tc(k, "u32")),
           ("  iptables NFQUEUE", _yes(k["nfqueue_rule"]) if k["nfqueue_rule"].get("tried")
            else f"target {'registered' if k['xt_nfqueue_registered'] else k['modules']['nfqueue_target']}"
                 f" ({k['nfqueue_rule'].get('detail', '')})"),
           ("  NFQUEUE bind", _yes(k["queue_bind"])),
           ("observers", " ".join(v["observers"])),
           ("tracefs", _tracefs(k["tracefs"]))]
    for event, tp in sorted(k["tracefs"].get("tracepoints", {}).items()):
        out.append((f"  {event.split('/')[-1]}", _tracepoint(tp)))
    out += [("inet_diag", _yes(k["inet_diag"])), ("capture (AF_PACKET)", _yes(k["capture"])),
            ("clock", _clock(r["clock"])),
            ("missing packages", ", ".join(r["packages"]["missing"]) or "none")]
    out += [("problem", p) for p in v["problems"]] + [("warning", w) for w in v["warnings"]]
    return out


def _cut(text: str) -> str:
    return text if len(text) <= WIDTH else text[:WIDTH - 1] + "…"


def render(reports: Mapping[str, Mapping]) -> str:
    hosts = sorted(reports)
    per_host = {h: rows(reports[h]) for h in hosts}
    labels: list[str] = []
    for h in hosts:
        labels += [label for label, _ in per_host[h] if label not in labels and label not in ("problem", "warning")]
    cells = {h: {} for h in hosts}
    notes: list[str] = []
    for h in hosts:
        for label, cell in per_host[h]:
            if label in ("problem", "warning"):
                notes.append(f"{h}: {label}: {cell}")
            else:
                cells[h][label] = cell
    lw = max(len(x) for x in labels + ["host"]) + 2
    lines = ["host".ljust(lw) + "".join(h.ljust(WIDTH + 2) for h in hosts).rstrip()]
    for label in labels:
        lines.append(label.ljust(lw) + "".join(_cut(cells[h].get(label, "")).ljust(WIDTH + 2)
                                              for h in hosts).rstrip())
    for h in hosts:
        tps = reports[h].get("kernel", {}).get("tracefs", {}).get("tracepoints", {})
        if tps:
            lines.append("")
            lines.append(f"{h}: tracepoint fields")
            lines += [f"  {e}: {' '.join(tp['fields']) or '-'}" for e, tp in sorted(tps.items())]
    if notes:
        lines.append("")
        lines += notes
    return "\n".join(lines)
