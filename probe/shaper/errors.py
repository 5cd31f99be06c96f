"""Typed errors of the shaper: one-line messages, raised ``from`` the cause."""

from __future__ import annotations


class ShaperError(Exception):
    """Shaping could not be applied, verified or removed."""


class NetemUnavailable(ShaperError):
    """The kernel has no sch_prio/sch_netem: the tc backend cannot be used here."""
