"""Can this probe shape? Asked once at start, said in the hello, before any run.

The question is the doctor's (:func:`probe.doctor.shaping`, the kernel tried in a throwaway namespace),
asked with what is installed now: the NFQUEUE fallback needs the ``iptables`` binary on the probe's
PATH (the shaper runs it) and fnfqueue importable (the delay line). The answer goes into the hello as
``shaping: {"backend": "netem"|"nfqueue"|None, "reason": str}``; the controller refuses a run that
shapes a host whose backend is None, naming the host and this reason (controller/readiness.py), so a
host that cannot shape fails before the run, not as a command error in the middle of it.
"""

from __future__ import annotations

import structlog

from probe import doctor

log = structlog.get_logger(__name__)


def shaping_now(port: int, choice: str = "auto") -> dict:
    """``{"backend": "netem"|"nfqueue"|None, "reason": str}`` with the tools installed now, for the
    probe's configured ``shaper_backend`` (``choice``)."""
    shape = doctor.shaping(doctor.kernel(port, only=("shaping",)), tools_required=True, choice=choice)
    why_not = dict(shape["why_not"])
    backend = shape["backend"]
    if backend == "nfqueue":
        try:
            import fnfqueue  # noqa: F401
        except ImportError as e:
            backend, why_not["nfqueue"] = None, f"the delay line's fnfqueue cannot be imported ({e})"
    reason = "; ".join(f"{b}: {why}" for b, why in why_not.items()) or "the kernel has prio, netem and u32"
    return {"backend": backend, "reason": reason}


def check(port: int, choice: str = "auto") -> dict:
    """:func:`shaping_now`, logged: an error event when nothing can shape here."""
    try:
        result = shaping_now(port, choice)
    except Exception as e:  # the check itself broke: say so, and let the shaper try at run time
        log.error("shaping_check_failed", error=repr(e))
        return {"backend": "unknown", "reason": f"the check failed: {e!r}"}
    if result["backend"] is None:
        log.error("shaping_unavailable", reason=result["reason"])
    else:
        log.info("shaping_backend_expected", backend=result["backend"], reason=result["reason"])
    return result
