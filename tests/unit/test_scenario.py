import pytest
import yaml

from controller import scenario
from controller.scenario import ScenarioError


def test_seed_scenario_loads_with_the_storyline():
    s = scenario.load("scenarios/seed.yml").bound()  # its roles as the seed's hosts
    assert s.name == "seed" and s.delay == 3.0 and s.port == 9090
    assert s.hosts == ("thinkpad", "raspberrypi")
    assert [st.action for st in s.steps] == [
        "shape", "listen", "connect", "send", "send", "close", "close", "wait", "shape"]
    connect = s.steps[2]
    assert connect.to == "thinkpad"
    assert [str(e) for e in connect.expect][-1] == "thinkpad ESTABLISHED"
    assert str(s.steps[3].expect[0]) == "raspberrypi prints Hello"


def test_delay_override_changes_default_timeouts():
    s = scenario.load("scenarios/seed.yml").bound()  # its roles as the seed's hosts
    fast = s.with_delay(0.3)
    assert fast.delay == 0.3
    assert fast.timeout(fast.steps[2]) == pytest.approx(11.5)
    assert fast.timeout(fast.steps[7]) == 100  # an explicit timeout stays
    with pytest.raises(ScenarioError, match="outside"):
        s.with_delay(-1)


def test_round_trip_through_the_wire_dict():
    s = scenario.load("scenarios/seed.yml").bound()  # its roles as the seed's hosts
    again = scenario.parse(s.to_dict())
    assert again == scenario.Scenario(s.name, s.steps, s.delay, s.port, s.description, s.hosts)


def steps(*items):
    return {"name": "t", "steps": list(items)}


@pytest.mark.parametrize("data, message", [
    ([], "must be a mapping"),
    ({"name": "t"}, "'steps' must be a non-empty list"),
    ({"name": "a b", "steps": [{"action": "wait", "expect": ["x LISTEN"]}]}, "'name' must be a simple word"),
    ({"name": "t", "colour": 1, "steps": []}, "unknown field"),
    (steps({"action": "dance", "host": "a"}), "step 1: action must be one of"),
    (steps({"action": "listen"}), "step 1 \\(listen\\): needs 'host'"),
    (steps({"action": "listen", True: "a"}), "write 'host:'"),
    (steps({"action": "listen", "host": ["a", "b"]}), "exactly one host"),
    (steps({"action": "connect", "host": "b"}), "needs 'to'"),
    (steps({"action": "send", "host": "a"}), "needs 'text'"),
    (steps({"action": "send", "host": "a", "text": "two\nlines"}), "one line"),
    (steps({"action": "wait"}), "a wait needs 'duration' \\(seconds\\) or 'expect'"),
    (steps({"action": "wait", "expect": ["a ESTABLISHD"]}), "unknown TCP state 'ESTABLISHD'"),
    (steps({"action": "wait", "expect": ["a"]}), "expectation must read"),
    (steps({"action": "wait", "expect": ["a LISTEN"], "timeout": -1}), "timeout must be a number"),
    (steps({"action": "shape", "host": "a", "delay": 600}), "delay must be a number from 0 to 60"),
    (steps({"action": "listen", "host": "a", "colour": "red"}), "step 1 \\(listen\\)|unknown field"),
    (steps({"action": "connect", "host": "b", "to": "a", "count": 0}), "count must be a whole number .* 1 to 512"),
    (steps({"action": "send", "host": "a", "text": "x", "count": 2}), "send takes no 'count'"),
    (steps({"action": "wait", "expect": ["a ESTABLISHED x0"]}), "count in expectation .* at least 1"),
    (steps({"action": "wait", "expect": ["a ESTABLISHED x"]}), "unknown TCP state 'ESTABLISHED x'"),
    ({"name": "t", "delay": "3s", "steps": [{"action": "wait", "expect": ["a LISTEN"]}]}, "delay must be a number"),
])
def test_bad_scenarios_get_one_line_errors(data, message):
    with pytest.raises(ScenarioError, match=message) as err:
        scenario.parse(data, source="x.yml")
    assert "\n" not in str(err.value) and str(err.value).startswith("x.yml")


def test_bad_files_name_the_file(tmp_path):
    p = tmp_path / "bad.yml"
    p.write_text("name: [unclosed\n")
    with pytest.raises(ScenarioError, match=r"bad.yml:2: not valid YAML \(expected ',' or '\]', but got "
                                            r"'<stream end>', while parsing a flow sequence from line 1\)"):
        scenario.load(p)
    with pytest.raises(ScenarioError, match="cannot read"):
        scenario.load(tmp_path / "missing.yml")


def test_expectation_spellings():
    s = scenario.parse(steps({"action": "wait", "expect": ["a syn_recv", "b prints Hello world", "a TCP_CLOSE"]}))
    e = s.steps[0].expect
    assert (e[0].state, e[1].text, e[2].state) == ("SYN_RECEIVED", "Hello world", "CLOSED")


def test_counted_expectations_and_the_many_clients_scenario():
    s = scenario.parse(steps({"action": "wait", "expect": ["a ESTABLISHED x200", "b prints Bye x3", "b prints x2 x"]}))
    e = s.steps[0].expect
    assert [(x.state, x.text, x.count) for x in e] == [("ESTABLISHED", None, 200), (None, "Bye", 3), (None, "x2 x", 1)]
    many = scenario.load("scenarios/many-clients.yml")
    assert [st.count for st in many.steps if st.action in ("listen", "connect")] == [200, 200]
    assert scenario.parse(many.to_dict()) == many  # count and the counted expectations survive the wire dict


def test_the_lab_port_is_the_probes_unless_the_scenario_names_another():
    doc = {"name": "x", "steps": [{"action": "listen", "host": "thinkpad"}]}
    free = scenario.parse(doc)
    assert free.port is None and scenario.parse(free.to_dict()).port is None
    assert scenario.port_conflict(free, {"thinkpad": 9191}) is None
    pinned = scenario.parse({**doc, "port": 9090}, source="scenarios/x.yml")
    assert scenario.port_conflict(pinned, {"thinkpad": 9090}) is None
    why = scenario.port_conflict(pinned, {"thinkpad": 9091}, source="scenarios/x.yml")
    assert why.startswith("scenarios/x.yml has port 9090 but thinkpad listens, shapes and captures on port 9091")
    assert "disagree" in scenario.port_conflict(free, {"thinkpad": 9090, "raspberrypi": 9091})
    assert "did not report" in scenario.port_conflict(free, {"thinkpad": None})


def test_roles_are_bound_to_the_labs_hosts_and_a_host_name_stays_one():
    scn = scenario.parse({"name": "r", "steps": [
        {"action": "listen", "host": "server", "expect": ["server LISTEN"]},
        {"action": "connect", "host": "client", "to": "server", "expect": ["client ESTABLISHED at 1",
                                                                            "thinkpad ESTABLISHED"]}]})
    assert scn.hosts == ("server", "client", "thinkpad")
    seed = scn.bound()  # the seed's roles by default
    assert seed.hosts == ("thinkpad", "raspberrypi")
    assert [s.hosts for s in seed.steps] == [("thinkpad",), ("raspberrypi",)] and seed.steps[1].to == "thinkpad"
    assert [str(e) for e in seed.steps[1].expect] == ["raspberrypi ESTABLISHED at 1", "thinkpad ESTABLISHED"]
    swapped = scn.bound({"server": "raspberrypi", "client": "thinkpad"})
    assert swapped.steps[0].hosts == ("raspberrypi",) and swapped.steps[1].to == "raspberrypi"
    assert swapped.hosts == ("raspberrypi", "thinkpad")
    # a lab with a host called "server" keeps it a host
    assert scn.bound({}, hosts=("server", "client")).hosts == ("server", "client", "thinkpad")


def test_the_controllers_roles_name_its_hosts(tmp_path):
    from controller import config
    base = {"bind": "ipc:///tmp/x.sock", "home": str(tmp_path / "h"), "runs_dir": str(tmp_path / "r"),
            "hosts": {"thinkpad": "10.90.0.1", "raspberrypi": "10.90.0.2"}}
    path = tmp_path / "c.yml"
    path.write_text(yaml.safe_dump({**base, "roles": {"server": "raspberrypi", "client": "thinkpad"}}))
    assert config.load(path).roles == {"server": "raspberrypi", "client": "thinkpad"}
    for roles, why in (({"server": "laptop"}, "role server is 'laptop', which is not one of the hosts"),
                       ({"router": "thinkpad"}, "roles must map server and client"),
                       ({"server": "thinkpad", "client": "thinkpad"}, "one host for two roles")):
        path.write_text(yaml.safe_dump({**base, "roles": roles}))
        with pytest.raises(config.ConfigError, match=why):
            config.load(path)


def test_a_printed_line_in_quotes_is_taken_as_it_is():
    names = frozenset({"a"})
    quoted = scenario._expectation('server prints "meet at 5" on a', "w", names)
    assert (quoted.text, quoted.at, quoted.conn) == ("meet at 5", None, "a")
    timed = scenario._expectation("server prints meet at 5", "w", names)
    assert (timed.text, timed.at) == ("meet", 5.0)  # unquoted, a trailing " at 5" is a time
    for text in ("meet at 5", "Bye x2", "Hi on a", "Hello", "two  spaces", " lead"):
        e = scenario.Expectation("server", text=text)
        assert scenario._expectation(str(e), "w", names) == e, str(e)  # what str() writes reads back the same
    assert str(scenario.Expectation("server", text="Hello")) == "server prints Hello"
    assert str(scenario.Expectation("server", text="meet at 5")) == 'server prints "meet at 5"'


def test_a_time_in_delays_follows_the_runs_delay():
    e = scenario._expectation("client ESTABLISHED at 0.1+2d±0.05", "w")
    assert (e.at, e.delays, e.tol) == (0.1, 2.0, 0.05) and e.when(3.0) == 6.1 and e.when(0.3) == pytest.approx(0.7)
    assert str(e) == "client ESTABLISHED at 0.1+2d±0.05" and scenario._expectation(str(e), "w") == e
    assert scenario._expectation("client ESTABLISHED at d", "w").when(0.3) == 0.3
    assert str(scenario._expectation("client ESTABLISHED at 2.5 d", "w")) == "client ESTABLISHED at 2.5d"
    with pytest.raises(ScenarioError, match="more than 3600 s or 1000 delays"):
        scenario._expectation("client ESTABLISHED at 1001d", "w")
    s = scenario.load("scenarios/two-connections.yml")
    timed = [e for st in s.steps for e in st.expect if e.delays]
    assert [str(e) for e in timed] == ["client ESTABLISHED on a at 2d", "server ESTABLISHED on a at 3d"]
