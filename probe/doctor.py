"""``python3 -m probe.doctor``: can this host run the lab? One JSON report on stdout.

Standard library only, so it runs on a host where nothing is installed yet (``playbooks/doctor.yml``
copies ``probe/{__init__,doctor,capabilities,tracefs_raw}.py`` to the host and runs it; ``tcplab doctor``
renders the reports). The probe asks the same question at start (:mod:`probe.readiness`) and says in
its hello which backend it will use, or why it cannot shape.

The checks that touch the kernel run in a child under ``unshare --net --mount --propagation private``
(``--inner``): a throwaway network namespace where the seed's tc layout and the NFQUEUE rule are built
and a queue is bound, and a private mount namespace where tracefs is mounted if the host has not, so
the doctor leaves nothing behind. The report's verdict (:func:`verdict`):

- ``backend``: ``netem`` when the kernel accepts prio + netem + u32, else ``nfqueue`` when it accepts
  the NFQUEUE target and a queue binds and the delay line's fnfqueue exists for the CPU, else None;
- ``observers``: inet_diag and capture are required; tracefs (with every field the decoder needs) is
  used when present, else the states come from inet_diag alone;
- ``can_run``: a backend, the required observers, and root. Missing packages and an unsynchronised
  clock are warnings: provisioning installs the packages, and the controller aligns the clocks itself.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the package importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from probe import capabilities  # noqa: E402
from probe.hostinfo import clock, packages  # noqa: E402
from probe.tracefs_raw import TCP_EVENTS, FormatError, parse_format, parse_header_page  # noqa: E402

TRACEFS = Path("/sys/kernel/tracing")
# the probe role's packages (playbooks/roles/probe/defaults/main.yml passes its own list with --packages)
PACKAGES = ("netcat-openbsd", "iproute2", "iptables", "tcpdump", "python3-venv")
FNFQUEUE_MACHINES = ("x86_64",)  # pyproject: fnfqueue has binary wheels for x86_64 only
LIVE = ("prio", "netem", "u32")


# --- tracefs -----------------------------------------------------------------------------------
def _tracefs_mount() -> Path | None:
    try:
        for line in Path("/proc/self/mounts").read_text().splitlines():
            parts = line.split()
            if len(parts) > 2 and parts[2] == "tracefs":
                return Path(parts[1])
    except OSError:
        pass
    return None


def _mount_tracefs() -> str:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(TRACEFS).encode(), b"tracefs", 0, None) != 0:
        return os.strerror(ctypes.get_errno())
    return ""


def tracefs(may_mount: bool) -> dict:
    """tracefs, its page header, ``trace_clock mono`` and each TCP tracepoint's fields."""
    root, mounted = _tracefs_mount(), False
    if root is None and may_mount and TRACEFS.is_dir():
        err = _mount_tracefs()
        if err:
            return {"ok": False, "detail": f"cannot mount tracefs on {TRACEFS}: {err}", "tracepoints": {}}
        root, mounted = TRACEFS, True
    if root is None:
        return {"ok": False, "detail": "tracefs not mounted", "tracepoints": {}}
    out: dict = {"mount": str(root), "mounted_by_doctor": mounted, "tracepoints": {}}
    problems = []
    try:
        hp = parse_header_page((root / "events" / "header_page").read_text())
        out["header_page"] = {"timestamp_size": hp.ts_size, "commit_size": hp.commit_size,
                              "data_offset": hp.data_offset}
    except (OSError, FormatError) as e:
        problems.append(f"header_page: {e}")
    try:
        out["trace_clock_mono"] = "mono" in (root / "trace_clock").read_text().replace("[", " ").replace("]", " ").split()
    except OSError:
        out["trace_clock_mono"] = False
    if not out["trace_clock_mono"]:
        problems.append("no trace_clock mono")
    if not (root / "instances").is_dir():
        problems.append("no instances directory")
    for event, (_, needed) in TCP_EVENTS.items():
        try:
            _, fmt = parse_format((root / "events" / event / "format").read_text(), event)
        except OSError:
            out["tracepoints"][event] = {"present": False, "fields": [], "missing": list(needed)}
            problems.append(f"no tracepoint {event}")
            continue
        except FormatError as e:
            out["tracepoints"][event] = {"present": True, "fields": [], "missing": list(needed)}
            problems.append(str(e))
            continue
        fields = [f for f in fmt.fields if not f.startswith("common_")]
        missing = fmt.missing(needed)
        out["tracepoints"][event] = {"present": True, "fields": fields, "missing": missing}
        if missing:
            problems.append(f"{event} lacks {', '.join(missing)}")
    state = out["tracepoints"].get("sock/inet_sock_set_state", {})
    out["ok"] = bool(state.get("present") and not state.get("missing") and out.get("header_page")
                     and out["trace_clock_mono"] and (root / "instances").is_dir())
    out["detail"] = "; ".join(problems)
    return out


# --- the checks in a throwaway namespace ---------------------------------------------------------
def inner(port: int, shaping_only: bool = False) -> dict:
    """What only a throwaway network and mount namespace may try (``--inner``); without tracefs
    when ``shaping_only``."""
    out = {"tc": capabilities.try_tc(port), "nfqueue_rule": capabilities.try_nfqueue_rule(port),
           "queue_bind": capabilities.try_queue_bind(port)}
    return out if shaping_only else {**out, "tracefs": tracefs(may_mount=True)}


def run_inner(port: int, shaping_only: bool = False) -> dict:
    """:func:`inner` under ``unshare``; without root or unshare, the read-only parts here."""
    unshare = shutil.which("unshare")
    if os.geteuid() != 0 or unshare is None:
        why = "not root" if os.geteuid() != 0 else "unshare not found (util-linux)"
        return {"isolated": False, "detail": why, "tc": {"tried": False, "detail": why},
                "nfqueue_rule": {"tried": False, "ok": None, "detail": why},
                "queue_bind": {"ok": None, "detail": why}, "tracefs": tracefs(may_mount=False)}
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    argv = [unshare, "--net", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "probe.doctor", "--inner", "--port", str(port),
            *(["--shaping-only"] if shaping_only else [])]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=env)
        if res.returncode != 0:  # e.g. a sandbox (systemd's RestrictNamespaces=) refuses the namespaces
            raise OSError((res.stderr.strip().splitlines() or [f"exit {res.returncode}"])[-1])
        return {"isolated": True, **json.loads(res.stdout)}
    except (OSError, subprocess.TimeoutExpired, ValueError) as e:
        detail = f"no throwaway namespace ({e})"
        return {"isolated": False, "detail": detail, "tc": {"tried": False, "detail": detail},
                "nfqueue_rule": {"tried": False, "ok": None, "detail": detail},
                "queue_bind": {"ok": None, "detail": detail}, "tracefs": tracefs(may_mount=False)}


# --- the report -----------------------------------------------------------------------------------
def kernel(port: int, only: tuple[str, ...] = ()) -> dict:
    """The kernel's answers; ``only=("shaping",)``: just what :func:`shaping` reads (the probe's
    question at start: no tracefs, inet_diag or capture checks)."""
    if set(only) - {"shaping"}:
        raise ValueError(f"unknown doctor part(s) {sorted(set(only) - {'shaping'})}")
    release = os.uname().release
    iso = run_inner(port, shaping_only=bool(only))
    modules = {kind: capabilities.module_status(mod, release) for kind, mod in capabilities.MODULES.items()}
    out = {"release": release, "machine": platform.machine(), "isolated_checks": iso.get("isolated", False),
           "isolated_detail": iso.get("detail", ""), "modules": modules,
           "xt_nfqueue_registered": "NFQUEUE" in capabilities.xt_targets(), "iptables": shutil.which("iptables"),
           "tc": iso["tc"], "nfqueue_rule": iso["nfqueue_rule"], "queue_bind": iso["queue_bind"]}
    if only:
        return out
    return {**out, "tracefs": iso["tracefs"], "inet_diag": capabilities.inet_diag(),
            "capture": capabilities.packet_capture()}


def _available(status: str) -> bool:
    return status in ("loaded", "builtin", "loadable")


def shaping(k: dict, tools_required: bool, choice: str = "auto") -> dict:
    """Which backend shaping will use, and why not the others.

    ``tools_required``: the probe's question (``iptables`` must be there now: the NFQUEUE rule goes in
    through it); the doctor before provisioning lets the kernel answer for a tool not installed yet.
    Where ``tc`` is missing the module files answer for netem either way (the probe speaks netlink).
    ``choice``: the probe's ``shaper_backend`` (auto, netem or nfqueue), as the Shaper honours it."""
    tc, mods = k["tc"], k["modules"]
    if tc.get("tried"):
        netem_ok = bool(tc.get("layout"))
        why_not_netem = "; ".join(f"{kind}: {tc[kind]['detail']}" for kind in LIVE
                                  if tc.get(kind) and tc[kind]["ok"] is False) or "the seed's tc layout failed"
    else:
        netem_ok = all(_available(mods[kind]) for kind in LIVE)
        why_not_netem = f"{tc.get('detail')}, and the module files do not show " + ", ".join(
            capabilities.MODULES[kind] for kind in LIVE if not _available(mods[kind]))
    if netem_ok and choice != "nfqueue":
        return {"backend": "netem", "tested": bool(tc.get("tried")), "why_not": {}}
    if choice == "netem":
        return {"backend": None, "tested": bool(tc.get("tried")), "why_not": {"netem": why_not_netem}}
    if choice == "nfqueue":
        why_not_netem = "the configuration asks for nfqueue"
    rule, bind = k["nfqueue_rule"], k["queue_bind"]
    reasons = []
    if rule.get("tried"):
        if not rule["ok"]:
            reasons.append(f"NFQUEUE rule: {rule['detail']}")
    elif tools_required and not k.get("iptables"):
        reasons.append("NFQUEUE rule: iptables not installed")
    elif not (k["xt_nfqueue_registered"] or _available(mods["nfqueue_target"])):
        reasons.append(f"NFQUEUE target: xt_NFQUEUE {mods['nfqueue_target']}")
    if bind.get("ok") is False:
        reasons.append(f"NFQUEUE bind: {bind['detail']}")
    if k["machine"] not in FNFQUEUE_MACHINES:
        reasons.append(f"the delay line's fnfqueue has no wheel for {k['machine']}")
    if not reasons:
        return {"backend": "nfqueue", "tested": bool(rule.get("tried")), "why_not": {"netem": why_not_netem}}
    return {"backend": None, "tested": bool(tc.get("tried")),
            "why_not": {"netem": why_not_netem, "nfqueue": "; ".join(reasons)}}


def verdict(k: dict, missing_packages: list[str], clock_info: dict) -> dict:
    shape = shaping(k, tools_required=False)
    problems, warnings = [], []
    if shape["backend"] is None:
        problems.append("cannot shape: " + "; ".join(f"{b}: {why}" for b, why in shape["why_not"].items()))
    for name in ("inet_diag", "capture"):
        if not k[name]["ok"]:
            problems.append(f"{name}: {k[name]['detail']}")
    if os.geteuid() != 0:
        problems.append("not root: the probe needs root (ansible_become)")
    observers = ["inet_diag", "capture", "console"]
    if k["tracefs"]["ok"]:
        observers.insert(0, "tracefs")
        unusable = [e for e, tp in k["tracefs"]["tracepoints"].items() if tp["missing"]]
        if unusable:
            warnings.append(f"tracepoints left out: {', '.join(unusable)}")
    else:
        warnings.append(f"no tracefs ({k['tracefs']['detail']}): states from inet_diag alone")
    if missing_packages:
        warnings.append(f"packages to install: {', '.join(missing_packages)} (provisioning installs them)")
    if clock_info.get("synchronised") is False:
        warnings.append("clock not synchronised (the controller aligns the probes' clocks itself)")
    return {"can_run": not problems, "backend": shape["backend"], "backend_tested": shape["tested"],
            "why_not": shape["why_not"], "observers": observers, "problems": problems, "warnings": warnings}


def report(port: int, wanted: tuple[str, ...] = PACKAGES) -> dict:
    k = kernel(port)
    pk = packages(wanted)
    cl = clock()
    return {"doctor": 1, "hostname": platform.node(), "python": platform.python_version(), "kernel": k,
            "clock": cl, "packages": pk, "verdict": verdict(k, pk["missing"], cl)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m probe.doctor", description="Can this host run the tcplab lab?")
    p.add_argument("--port", type=int, default=9090, help="the lab port (a match value only; nothing is sent)")
    p.add_argument("--packages", help="comma-separated packages the probe needs (default: the probe role's)")
    p.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--shaping-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not 0 < args.port < 65536:
        p.error(f"port {args.port} is outside 1..65535")
    if args.inner:
        print(json.dumps(inner(args.port, args.shaping_only)))
        return 0
    wanted = tuple(x for x in (args.packages or "").split(",") if x) or PACKAGES
    rep = report(args.port, wanted)
    print(json.dumps(rep, indent=1))
    return 0 if rep["verdict"]["can_run"] else 1


if __name__ == "__main__":
    sys.exit(main())
