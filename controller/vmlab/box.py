"""``make box``: a Vagrant box for libvirt, built here from Debian's packages (no box download).

debootstrap (minbase bookworm with exactly what the probe role installs, so the VMs never need a
mirror) -> a root file system configured for Vagrant -> an ext4 image with no partition table
(``mkfs.ext4 -d``) -> qcow2 -> a libvirt box: metadata.json, a Vagrantfile of the box's own that
boots the kernel and initrd shipped beside the image directly (no boot loader), box.img, vmlinuz,
initrd.img, in one uncompressed tar.

Cached and reused: the box is rebuilt only when its recipe (this file's package list and
settings) changed; debootstrap keeps the .debs it fetched in the cache, so a rebuild is offline.

What two VMs made from one image must not share is left out of it and made at first boot:
``/etc/machine-id`` is empty (systemd makes one per VM; with a shared id two VMs got one DHCP
lease) and the SSH host keys are removed (a unit runs ``ssh-keygen -A`` before sshd).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

import structlog

from tcplab.errors import TcplabError
from tcplab.files import replacing

log = structlog.get_logger(__name__)

SUITE = "bookworm"
DISK_GB = 3
# What the probe role installs (playbooks/roles/probe/defaults: tcplab_probe_packages) and what
# Ansible's modules need on a host (python3-apt for apt, sudo for become), plus a bootable system
# that Vagrant can configure (ifupdown for the private network, dbus for hostnamectl).
PACKAGES = [
    "linux-image-amd64", "systemd-sysv", "udev", "kmod", "dbus", "ifupdown", "isc-dhcp-client",
    "iproute2", "iputils-ping", "openssh-server", "sudo", "ca-certificates",
    "python3", "python3-apt", "python3-venv", "python3-setuptools", "python3-pip",
    "netcat-openbsd", "iptables", "tcpdump", "libpcap0.8",
]
CMDLINE = "console=ttyS0 root=/dev/vda rw net.ifnames=0"
BOX_VAGRANTFILE = f"""# The box's own Vagrantfile: boot the kernel shipped beside the image (the image has no boot loader).
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |lv|
    lv.kernel = File.join(File.dirname(__FILE__), "vmlinuz")
    lv.initrd = File.join(File.dirname(__FILE__), "initrd.img")
    lv.cmd_line = "{CMDLINE}"
  end
end
"""
HOSTKEYS_UNIT = """[Unit]
Description=tcplab: make this VM's own SSH host keys (the box ships none)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A

[Install]
WantedBy=multi-user.target
"""
INTERFACES = """# eth0: Vagrant's management network (DHCP); Vagrant adds the private network below.
auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
"""


class BoxError(TcplabError):
    """The box could not be built; the message says which step and why."""


def cache_dir() -> Path:
    return Path(os.environ.get("TCPLAB_BOX_CACHE", "/var/cache/tcplab/box"))


def recipe() -> str:
    """A fingerprint of everything that goes into the box: a change rebuilds it."""
    spec = {"suite": SUITE, "packages": PACKAGES, "cmdline": CMDLINE, "disk_gb": DISK_GB,
            "vagrantfile": BOX_VAGRANTFILE, "hostkeys": HOSTKEYS_UNIT, "interfaces": INTERFACES,
            "insecure_key": insecure_public_key()}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def insecure_public_key() -> str:
    """Vagrant's well-known public key: Vagrant logs in with it once and replaces it at the first up."""
    import glob
    for pattern in ("/usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub",  # Debian's
                    "/opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub"):  # HashiCorp's package
        for path in sorted(glob.glob(pattern)):
            return Path(path).read_text().strip()
    raise BoxError("Vagrant's insecure public key (keys/vagrant.pub) was not found: is vagrant installed?")


def box_path(cache: Path | None = None) -> Path:
    return (cache or cache_dir()) / f"tcplab-{SUITE}64-{recipe()}.box"


def build(cache: Path | None = None, force: bool = False) -> Path:
    """The box for the current recipe: the cached one, or a new one (about 2-4 minutes)."""
    cache = cache or cache_dir()
    out = box_path(cache)
    if out.is_file() and not force:
        log.info("box_cached", path=str(out))
        return out
    for tool in ("debootstrap", "mkfs.ext4", "qemu-img"):
        if shutil.which(tool) is None:
            raise BoxError(f"{tool} is not installed (make box installs debootstrap, e2fsprogs, qemu-utils)")
    (cache / "debs").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tcplab-box-", dir=cache) as tmp:
        work = Path(tmp)
        root = work / "root"
        try:
            _run("debootstrap", ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}",
                                 f"--cache-dir={cache / 'debs'}", SUITE, str(root)])
            configure(root)
            unmount_below(root)  # nothing of the build host's /proc or /sys goes into the image
            _image(root, work)
        finally:
            unmount_below(root)  # before the temporary tree is deleted, whatever failed
        with replacing(out) as tmp_box:
            with tarfile.open(tmp_box, "w") as tar:
                for name in ("metadata.json", "Vagrantfile", "box.img", "vmlinuz", "initrd.img"):
                    tar.add(work / name, arcname=name)
            for old in cache.glob(f"tcplab-{SUITE}64-*.box"):  # one box in the cache, the current one
                old.unlink()
    log.info("box_built", path=str(out), size_mb=out.stat().st_size >> 20)
    return out


def unmount_below(root: Path) -> None:
    """Unmount whatever debootstrap (or a failed run of it) left mounted inside ``root``."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        r = subprocess.run(["umount", "--lazy", point], capture_output=True, text=True)
        if r.returncode != 0:
            raise BoxError(f"cannot unmount {point} in the box's tree: {r.stderr.strip()}")


def configure(root: Path) -> None:
    """Make the debootstrapped tree a Vagrant box's system."""
    (root / "etc/fstab").write_text("/dev/vda / ext4 defaults 0 1\n")
    (root / "etc/network/interfaces").write_text(INTERFACES)
    (root / "etc/hostname").write_text("tcplab\n")
    # Empty, not missing: systemd makes this VM's own id at its first boot.
    (root / "etc/machine-id").write_text("")
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    unit = root / "etc/systemd/system/tcplab-ssh-hostkeys.service"
    unit.write_text(HOSTKEYS_UNIT)
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    (wants / unit.name).unlink(missing_ok=True)
    (wants / unit.name).symlink_to(f"/etc/systemd/system/{unit.name}")
    # the user Vagrant logs in as, with its well-known key and sudo without a password
    _run("useradd", ["chroot", str(root), "useradd", "--create-home", "--shell", "/bin/bash", "vagrant"])
    ssh = root / "home/vagrant/.ssh"
    ssh.mkdir(mode=0o700)
    (ssh / "authorized_keys").write_text(insecure_public_key() + "\n")
    (ssh / "authorized_keys").chmod(0o600)
    _run("chown", ["chroot", str(root), "chown", "-R", "vagrant:vagrant", "/home/vagrant/.ssh"])
    sudoers = root / "etc/sudoers.d/vagrant"
    sudoers.write_text("vagrant ALL=(ALL) NOPASSWD: ALL\n")
    sudoers.chmod(0o440)
    # a non-root `vagrant ssh -c` finds tc, ip and iptables too
    (root / "etc/profile.d/tcplab-sbin.sh").write_text('case ":$PATH:" in *:/usr/sbin:*) ;; *) PATH="$PATH:/usr/sbin:/sbin";; esac\n')
    _run("apt-get clean", ["chroot", str(root), "apt-get", "clean"])


def _image(root: Path, work: Path) -> None:
    boot = root / "boot"
    kernels = sorted(boot.glob("vmlinuz-*"))
    initrds = sorted(boot.glob("initrd.img-*"))
    if not kernels or not initrds:
        raise BoxError(f"no kernel or initrd in {boot} (did linux-image-amd64 install?)")
    shutil.copy(kernels[-1], work / "vmlinuz")
    shutil.copy(initrds[-1], work / "initrd.img")
    raw = work / "root.raw"
    with open(raw, "wb") as f:
        f.truncate(DISK_GB << 30)
    _run("mkfs.ext4", ["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(root), str(raw)])
    _run("qemu-img", ["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "box.img")])
    raw.unlink()
    (work / "metadata.json").write_text(json.dumps({"provider": "libvirt", "format": "qcow2",
                                                    "virtual_size": DISK_GB}))
    (work / "Vagrantfile").write_text(BOX_VAGRANTFILE)


def _run(step: str, argv: list[str]) -> None:
    log.info("box_step", step=step)
    r = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        tail = " | ".join(r.stdout.strip().splitlines()[-3:])
        raise BoxError(f"{step} failed (exit {r.returncode}): {tail}")
