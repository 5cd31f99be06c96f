"""Typed errors of the shaper: one-line messages, raised ``from`` the cause."""

from __future__ import annotations

from tcplab.errors import TcplabError


class ShaperError(TcplabError):
    """Shaping could not be applied, verified or removed."""


class NetemUnavailable(ShaperError):
    """The kernel has no sch_prio/sch_netem: the tc backend cannot be used here."""
