"""The embedded default testbed: two network namespaces that Ansible reaches over SSH.

``up(spec)``, ``down(spec)``, ``purge(spec)`` and ``status(spec)`` return JSON-able dicts; ``TestbedSpec``
describes the lab (hosts thinkpad/raspberrypi, 10.90.0.0/24, bridge tcplab0, home from
``TCPLAB_HOME``). ``python -m controller.testbed.cli up|down|purge|status`` drives them.
"""

from controller.testbed.spec import HostSpec, TestbedError, TestbedSpec
from controller.testbed.testbed import down, purge, status, up

__all__ = ["HostSpec", "TestbedError", "TestbedSpec", "down", "purge", "status", "up"]
