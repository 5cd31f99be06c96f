"""What the probe and the controller both use: the wire, the daemons' pid files and logging, config files, TCP's states.

The probe is installed alone on a lab host (the project's wheel, without the control extras), so
nothing here imports ``controller`` or an optional dependency.
"""
