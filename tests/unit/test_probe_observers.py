"""The probe's netstat change detection and state plumbing (probe/observers.py), without root.

:class:`NetstatPane` is pure. :class:`Observers` with real kernel sockets is in
tests/integration/test_probe_observers_kernel.py: its inet_diag dumps go over netlink, which the
arm chroots' qemu-user does not emulate, and these unit tests also run there (test_arch_install).
"""

from __future__ import annotations

from probe.observers import NetstatPane


def row(state="ESTABLISHED", timer="keepalive (7.20/0/0)", send_q=0, foreign="10.90.0.2:40370"):
    return {"proto": "tcp", "recv_q": 0, "send_q": send_q, "local": "10.90.0.1:9090", "foreign": foreign,
            "state": state, "timer": timer}


def test_the_first_rows_are_due_and_the_same_rows_are_not():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row()], 10.0)
    assert not pane.due([row()], 10.5)


def test_a_timer_counting_down_is_no_change_but_another_timer_is():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row(timer="keepalive (7.20/0/0)")], 10.0)
    assert not pane.due([row(timer="keepalive (6.90/0/0)")], 10.2)
    assert pane.due([row(timer="on (0.20/1/0)")], 10.3)


def test_a_state_a_queue_or_a_socket_more_is_a_change():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row()], 10.0)
    assert pane.due([row(state="FIN_WAIT2")], 10.1)
    assert pane.due([row(state="FIN_WAIT2", send_q=5)], 10.2)
    assert pane.due([row(state="FIN_WAIT2", send_q=5), row(state="LISTEN", foreign="0.0.0.0:*")], 10.3)
    assert pane.due([], 10.4)
    assert not pane.due([], 10.5)


def test_unchanged_rows_are_sent_again_once_a_second():
    pane = NetstatPane(every_s=1.0)
    assert pane.due([row()], 10.0)
    assert not pane.due([row()], 10.99)
    assert pane.due([row()], 11.0)
    assert not pane.due([row()], 11.5)
