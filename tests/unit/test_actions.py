"""The action registry: each action's wire checks, its step -> arguments, and the probe's dispatch."""

from __future__ import annotations

import asyncio
import pkgutil
from dataclasses import dataclass

import pytest

import tcplab.actions
from controller import scenario
from tcplab import actions, wire
from tcplab.actions import ActionError, StepContext

IPS = {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}


def ctx(port: int | None = 9191, delay: float = 3.0) -> StepContext:
    return StepContext(lab_ip=IPS.get, port=port, delay=delay)


def step(**raw) -> scenario.Step:
    """One step as the scenario format reads it (the order of steps is parse()'s, not this)."""
    return scenario._step(1, raw, "scenario")


def test_every_action_module_is_registered_once():
    modules = {m.name for m in pkgutil.iter_modules(tcplab.actions.__path__)} - {"action", "conn"}  # what they share
    assert modules == set(actions.ACTIONS)
    assert all(a.name == name for name, a in actions.ACTIONS.items()) and tuple(actions.ACTIONS) == actions.NAMES
    assert scenario.ACTIONS == (*(n for n in actions.NAMES if n != "sync"), "wait")  # sync: the cleanup's


def test_the_wire_does_not_name_actions_the_registry_does():
    assert not hasattr(wire, "ACTIONS")


@pytest.mark.parametrize("body, args", [
    ({"id": 1, "action": "shape", "args": {"clear": True}}, {"clear": True}),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 300, "loss_pct": 100}}, {"delay_ms": 300, "loss_pct": 100}),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 300, "jitter_ms": 300, "duplicate_pct": 0.5, "reorder_pct": 25,
                                            "corrupt_pct": 1, "rate_kbit": 64}},
     {"delay_ms": 300, "jitter_ms": 300, "duplicate_pct": 0.5, "reorder_pct": 25, "corrupt_pct": 1, "rate_kbit": 64}),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1"}}, {"ip": "10.90.0.1"}),
    ({"id": 1, "action": "send", "args": {"text": ""}}, {"text": ""}),
    ({"id": 1, "action": "sync"}, {}),
    ({"id": 1, "action": "listen", "args": {"count": 512}}, {"count": 512}),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "count": 200}}, {"ip": "10.90.0.1", "count": 200}),
])
def test_checks_let_through_what_each_action_takes(body, args):
    assert actions.check_command(body) == (body["action"], args)


@pytest.mark.parametrize("body, reason", [
    ({"id": 1, "action": "shape", "args": {"loss_pct": 101}}, "loss_pct 101 is outside 0..100"),
    ({"id": 1, "action": "shape", "args": {"clear": 1}}, "'clear' has the wrong type"),
    ({"id": 1, "action": "shape", "args": {"clear": True, "delay_ms": 10}}, "shape clear takes no other argument"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 300.5}}, "'delay_ms' has the wrong type"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 100, "jitter_ms": 101}}, "jitter_ms 101 is larger than"),
    ({"id": 1, "action": "shape", "args": {"reorder_pct": 10}}, "reorder_pct needs a delay"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 10, "rate_kbit": 10**8}}, "rate_kbit 100000000 is outside"),
    ({"id": 1, "action": "shape", "args": {"delay_ms": 10, "duplicate_pct": -1}}, "duplicate_pct -1 is outside"),
    ({"id": 1, "action": "connect", "args": {"port": 9090}}, "connect needs argument 'ip'"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": True}}, "'port' has the wrong type"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": 65536}}, "port 65536 is outside 1..65535"),
    ({"id": 1, "action": "connect", "args": {"ip": "-lk"}}, "connect ip '-lk' is not a plain unicast IPv4 address"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.01"}}, "'10.90.0.01' is not a plain unicast IPv4"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1 -l"}}, "is not a plain unicast IPv4"),
    ({"id": 1, "action": "connect", "args": {"ip": "thinkpad"}}, "is not a plain unicast IPv4"),
    ({"id": 1, "action": "connect", "args": {"ip": "0.0.0.0"}}, "is not a plain unicast IPv4"),
    ({"id": 1, "action": "connect", "args": {"ip": "224.0.0.1"}}, "is not a plain unicast IPv4"),
    ({"id": 1, "action": "connect", "args": {"ip": "255.255.255.255"}}, "is not a plain unicast IPv4"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "port": 0}}, "port 0 is outside 1..65535"),
    ({"id": 1, "action": "send", "args": {"text": "x" * 4097}}, "one line of at most 4096"),
    ({"id": 1, "action": "sync", "args": {"wait": 1}}, "sync takes no argument 'wait'"),
    ({"id": 1, "action": "listen", "args": {"count": 513}}, "listen count 513 is outside 1..512"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "count": 0}}, "connect count 0 is outside 1..512"),
    ({"id": 1, "action": "connect", "args": {"ip": "10.90.0.1", "count": True}}, "'count' has the wrong type"),
    ({"id": 1, "action": "send", "args": {"text": "x", "count": 2}}, "send takes no argument 'count'"),
    ({"id": 1, "action": "close", "args": []}, "args of close must be a map"),
    ({"id": True, "action": "close"}, "id must be an integer"),
    ({"id": 1, "action": ["close"]}, "unknown action"),
])
def test_checks_refuse_with_one_line_naming_the_argument(body, reason):
    with pytest.raises(wire.ProtocolError, match=reason) as err:
        actions.check_command(body)
    assert "\n" not in str(err.value)


def test_shape_from_step_takes_the_steps_delay_or_the_scenarios():
    shape = actions.ACTIONS["shape"]
    assert shape.from_step(step(action="shape", host=["thinkpad", "raspberrypi"]), ctx(delay=0.3)) == {
        "delay_ms": 300}
    assert shape.from_step(step(action="shape", host="thinkpad", delay=1.25, loss=5), ctx()) == {
        "delay_ms": 1250, "loss_pct": 5}
    assert shape.from_step(step(action="shape", host="thinkpad", delay=0.2, jitter=0.05, duplicate=1, reorder=25,
                                corrupt=0.5, rate="2mbit"), ctx()) == {
        "delay_ms": 200, "jitter_ms": 50, "duplicate_pct": 1, "reorder_pct": 25, "corrupt_pct": 0.5,
        "rate_kbit": 2000}
    assert shape.from_step(step(action="shape", host="thinkpad", clear=True), ctx()) == {"clear": True}


def test_connect_goes_to_the_runs_port_never_the_scenarios():
    connect = actions.ACTIONS["connect"]
    pinned = scenario.parse({"name": "t", "port": 9090, "steps": [
        {"action": "connect", "host": "raspberrypi", "to": "thinkpad"}]}).steps[0]
    assert connect.from_step(pinned, ctx(port=9191)) == {"ip": "10.90.0.1", "port": 9191}
    assert connect.from_step(pinned, ctx(port=None)) == {"ip": "10.90.0.1"}  # the probe's own port then
    with pytest.raises(ActionError, match=r"^ghost has no lab address in the controller's configuration \(hosts\)$"):
        connect.from_step(step(action="connect", host="raspberrypi", to="ghost"), ctx())


def test_the_other_actions_from_step():
    assert actions.ACTIONS["send"].from_step(step(action="send", host="thinkpad", text="Hello"), ctx()) == {
        "text": "Hello"}
    for name in ("listen", "close", "abort"):
        assert actions.ACTIONS[name].from_step(step(action=name, host="thinkpad"), ctx()) == {}


def test_every_from_step_makes_arguments_its_check_accepts():
    steps = [step(action="shape", host="thinkpad"), step(action="shape", host="thinkpad", clear=True),
             step(action="listen", host="thinkpad"), step(action="connect", host="raspberrypi", to="thinkpad"),
             step(action="send", host="thinkpad", text="Hello"), step(action="close", host="thinkpad"),
             step(action="abort", host="thinkpad"), step(action="listen", host="thinkpad", count=200),
             step(action="connect", host="raspberrypi", to="thinkpad", count=200)]
    for i, s in enumerate(steps):
        args = actions.ACTIONS[s.action].from_step(s, ctx())
        assert actions.check_command({"id": i, "action": s.action, "args": args}) == (s.action, args)


def test_step_rules_come_from_the_action():
    # another action's field is an error naming it, not silently dropped
    with pytest.raises(scenario.ScenarioError, match=r"step 1 \(connect\): connect takes no 'text'"):
        step(action="connect", host="raspberrypi", to="thinkpad", text="x")
    with pytest.raises(scenario.ScenarioError, match=r"step 1 \(send\): send takes no 'to'"):
        step(action="send", host="thinkpad", to="raspberrypi", text="x")
    with pytest.raises(scenario.ScenarioError, match=r"step 1 \(close\): close takes no 'count'"):
        step(action="close", host="thinkpad", count=3)
    with pytest.raises(scenario.ScenarioError, match=r"step 1 \(wait\): a wait takes no 'count'"):
        step(action="wait", count=3, expect=["thinkpad LISTEN"])
    assert step(action="connect", host="raspberrypi", to="thinkpad", count=200).count == 200
    assert step(action="listen", host="thinkpad").count == 1
    for bad in (0, 513, True, 2.5, "200"):
        with pytest.raises(scenario.ScenarioError, match=r"step 1 \(listen\): count must be a whole number"):
            step(action="listen", host="thinkpad", count=bad)
    with pytest.raises(scenario.ScenarioError, match=r"step 1 \(connect\): needs 'to'"):
        step(action="connect", host="raspberrypi", to="not a host")


# --- the probe's dispatch (probe/commands.py) through a ProbeHost -------------------------------

@dataclass
class Cfg:
    port: int = 9090


class Host:
    """The probe side a handler sees (the ProbeHost seam): records what the handlers asked for."""

    def __init__(self):
        self.cfg, self.calls, self.events = Cfg(), [], []

    def emit(self, body: dict) -> None:
        self.events.append(body)

    async def netlink(self, fn, *args, **kwargs):
        return fn(*args, **kwargs)

    def remember_nc(self) -> None:
        self.calls.append("remember_nc")

    async def barrier(self) -> None:
        self.calls.append("barrier")


def test_commands_dispatch_through_the_registry_and_answer_every_command():
    from probe.commands import Commands

    host = Host()
    replies: list[tuple[str, dict]] = []

    async def reply(type_: str, body: dict) -> None:
        replies.append((type_, body))

    async def main():
        commands = Commands(host, reply)
        runner = asyncio.create_task(commands.run())
        for body in ({"id": 1, "action": "sync"}, {"id": 2, "action": "reboot"},
                     {"id": 3, "action": "close"}):  # this Host has no endpoint: the action fails
            commands.put(body)
        while len(replies) < 3:
            await asyncio.sleep(0.01)
        runner.cancel()

    asyncio.run(main())
    assert host.calls == ["barrier"]
    assert replies[0] == ("result", {"id": 1, "ok": True, "data": {}})
    assert replies[1][1]["ok"] is False and replies[1][1]["error"].startswith("unknown action 'reboot'")
    assert replies[2][1] == {"id": 3, "ok": False, "error": "AttributeError: 'Host' object has no attribute "
                                                             "'endpoint'"}


def test_the_probe_offers_what_handlers_may_use():
    from probe.daemon import Probe

    for name in ("emit", "netlink", "remember_nc", "barrier"):
        assert callable(getattr(Probe, name)), name
