"""Can the probes of a scenario shape? Asked before a run starts, from what each probe's hello said.

A probe checks at start which shaping backend it will use (probe/readiness.py) and says
``shaping: {"backend": ..., "reason": ...}`` in its hello. A scenario that shapes a host whose backend
is None is refused with one line naming the host and the reason, before a run directory, a step or a
command: a host that cannot shape is not found out by a command error in the middle of a run. A probe
whose hello says nothing about shaping (an older one) is let through: its shaper still answers.

The probe bus answers for one host (``ProbeBus.shaping_unavailable``, from :func:`why_not_shape`);
:func:`shaping_refusal` asks it for each host the scenario shapes, beside the sequencer's refusal.
"""

from __future__ import annotations

from typing import Callable, Mapping

from controller.scenario import Scenario


def shaped_hosts(scn: Scenario) -> list[str]:
    """The hosts some step of the scenario shapes (a clear only removes shaping)."""
    hosts: list[str] = []
    for step in scn.steps:
        if step.action == "shape" and not step.clear:
            hosts += [h for h in (step.hosts or scn.hosts) if h not in hosts]
    return hosts


def why_not_shape(hello: Mapping) -> str | None:
    """Why a probe cannot shape, from its hello (its ``shaping`` says backend None); None if it can,
    or if the hello says nothing about shaping."""
    shaping = hello.get("shaping")
    if isinstance(shaping, Mapping) and "backend" in shaping and shaping["backend"] is None:
        return shaping.get("reason") or "no reason given"
    return None


def shaping_refusal(scn: Scenario, why_not: Callable[[str], str | None]) -> str | None:
    """Why the scenario cannot run (hosts that cannot shape, each with its reason), or None.
    ``why_not(host)`` answers for one host (the probe bus's ``shaping_unavailable``)."""
    bad = [f"{host} cannot shape ({reason})" for host in shaped_hosts(scn) if (reason := why_not(host))]
    if not bad:
        return None
    return f"scenario {scn.name} shapes a host that cannot: " + "; ".join(bad)


def cannot_shape(scn: Scenario, hellos: Mapping[str, Mapping]) -> str | None:
    """:func:`shaping_refusal` from the probes' hellos (host -> hello)."""
    return shaping_refusal(scn, lambda host: why_not_shape(hellos.get(host) or {}))
