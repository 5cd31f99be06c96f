"""What an action is: one :class:`Action` per module of :mod:`tcplab.actions`, everything about it
in one place (pyroute2 keeps each qdisc's options, parameters and checks in its own module).

An action has three faces:
- on the wire: its arguments (:class:`Arg`: type, required, bounds) and any check across them;
- in a scenario: whether a step may use it, on how many hosts, which step fields it reads and
  how they are checked (``check_step``), and how a step becomes its wire arguments
  (``from_step(step, ctx)``; :class:`StepContext` gives the run's facts);
- on the probe: ``handle(host, args)``, acting only through :class:`ProbeHost`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Mapping, Protocol

from tcplab.errors import TcplabError
from tcplab.wire import ProtocolError

if TYPE_CHECKING:  # the probe's parts, for the handlers' types only (tcplab never imports them at run time)
    from probe.endpoint import Endpoint
    from probe.shaper import Shaper
    from probe.sysctls import Sysctls


class ActionError(TcplabError, ValueError):
    """A scenario step that cannot become this action's arguments; one line, without the step's name.
    ``field``: the step field at fault, when one is (the scenario's error then names its line)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class ProbeHost(Protocol):
    """What a handler may use on the probe (the probe daemon implements it)."""

    cfg: Any            # probe.config.ProbeConfig: .port is the lab port, the one the probe listens on
    shaper: "Shaper"
    sysctls: "Sysctls"                                          # the run's TCP knobs (saved, restored)
    endpoint: "Endpoint"

    def emit(self, body: dict) -> None: ...                    # an event to the controller
    async def netlink(self, fn: Callable, *args, **kwargs) -> Any: ...  # fn on the netlink worker thread
    def remember_nc(self) -> None: ...                         # the nc just started is ours (kstates)
    async def barrier(self) -> None: ...                       # sync: every event so far on the wire


@dataclass(frozen=True)
class StepContext:
    """The run's facts a step's arguments come from."""

    lab_ip: Callable[[str], str | None]   # a host's lab address (the controller's config: the inventory's)
    port: int | None                      # the run's lab port: the probes' (their hello), never the scenario's
    delay: float                          # the scenario's delay in seconds
    # a named connection's address pair as a host sees it (local, remote), once its connect reported it
    pair: Callable[[str, str], tuple[str, str] | None] = lambda name, host: None


class Step(Protocol):  # controller.scenario.Step, as far as from_step reads it
    hosts: tuple[str, ...]
    to: str | None
    text: str | None
    count: int                            # connections a listen serves or a connect opens (1: nc's one)
    delay: float | None
    shaping: tuple[tuple[str, float], ...]  # shape: the impairment's parameters but the delay (wire units)
    clear: bool
    settings: tuple[tuple[str, int | tuple[int, ...]], ...]  # sysctl: the knobs and their values
    keepalive: tuple[int, int, int] | None                   # keepalive: idle, interval (s), probes
    bytes: int | None                                        # send: that many bytes instead of a text
    reading: bool | None                                     # read: go on (True) or stop (False)
    connection: str | None                                   # the named connection it acts on (conn.py)
    app: bool                                                # listen/connect: the probe's own application


@dataclass(frozen=True)
class Arg:
    types: type | tuple[type, ...]
    required: bool = False
    bounds: tuple[float, float] | None = None   # (lo, hi), both included, checked for every value given

    def check(self, action: str, key: str, value: object) -> None:
        if not isinstance(value, self.types) or (isinstance(value, bool) and self.types is not bool):
            raise ProtocolError(f"{action} argument {key!r} has the wrong type ({type(value).__name__})")
        if self.bounds is not None and not self.bounds[0] <= value <= self.bounds[1]:  # type: ignore[operator]
            raise ProtocolError(f"{action} {key} {value} is outside {self.bounds[0]:g}..{self.bounds[1]:g}")


def no_args(step: Step, ctx: StepContext) -> dict:
    return {}


Handler = Callable[[ProbeHost, dict], Awaitable[dict]]


@dataclass(frozen=True)
class Action:
    name: str
    handle: Handler                                   # the probe's side; returns the result's data
    args: Mapping[str, Arg] = field(default_factory=dict)
    check: Callable[[dict], None] | None = None       # a check across arguments; raises ProtocolError
    from_step: Callable[[Step, StepContext], dict] = no_args  # may raise ActionError
    in_scenario: bool = True                          # False: only the sequencer sends it (sync)
    one_host: bool = True                             # a step acts on exactly one host (shape: several)
    step_fields: tuple[str, ...] = ()                 # the step fields only this action reads (to, text)
    check_step: Callable[[Mapping], None] | None = None  # the raw step's fields; raises ActionError

    def check_args(self, args: object) -> dict:
        """The arguments of a command, checked; raises ProtocolError naming the offending one."""
        if not isinstance(args, dict):
            raise ProtocolError(f"args of {self.name} must be a map")
        for key, value in args.items():
            if key not in self.args:
                raise ProtocolError(f"{self.name} takes no argument {key!r}")
            self.args[key].check(self.name, key, value)
        for key, arg in self.args.items():
            if arg.required and key not in args:
                raise ProtocolError(f"{self.name} needs argument {key!r}")
        if self.check is not None:
            self.check(args)
        return args
