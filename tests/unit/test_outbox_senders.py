"""Two tasks send from one probe outbox (the sender's events, the receiver's acks, the keepalive):
a batch another sender already took off the queue is not taken off again. bench.fuzz_wire found it:
after 400,000 frames from a fuzzing controller the probe's receiver ended on an empty queue's popleft
and the probe stopped."""

from probe.outbox import Outbox
from tcplab import wire


def _console(i: int) -> dict:
    return {"kind": "console", "t_ns": i, "text": str(i), "stream": "stdout"}


def test_a_batch_sent_by_another_sender_meanwhile_leaves_the_queue_whole(tmp_path):
    box = Outbox(wire.Session("thinkpad"), tmp_path / "spill", max_bytes=1 << 20, max_spill=1 << 20, batch_bytes=64)
    box.add([_console(i) for i in range(3)])  # three batches (64 bytes hold one event)
    mine = box.next()                 # one sender takes the first and waits on its socket ...
    theirs = box.next()               # ... another takes the same, sends it and is done first
    assert theirs is mine
    box.sent(theirs, 1.0)
    box.sent(mine, 2.0)               # it used to pop the second batch here, and raise on an empty queue
    assert [b.first for b in box.queue] == [2, 3] and mine.sent == 2.0
    for _ in range(2):
        box.sent(box.next(), 3.0)
    box.sent(mine, 4.0)               # nothing left on the queue: no IndexError
    assert box.next() is None
