# tcplab: two commands on a fresh Debian 12 or Ubuntu machine, as root:
#   make film    install what is missing, then film the default scenario (ansible-playbook lab.yml)
#   make test    install what is missing, then run the whole test suite
# DELAY=0.3 shortens the delay of the default scenario: make film DELAY=0.3

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := film

VENV := .venv
PY := /usr/bin/python3
# Debian packages the lab drives (and the ones Ansible's apt and pip modules need on the hosts).
APT_PACKAGES := openssh-server netcat-openbsd iproute2 iptables tcpdump librsvg2-bin \
                python3-venv python3-pip python3-setuptools python3-apt
# and the ones only the tests need: a browser for film.html, a terminal multiplexer for the replay,
# tshark (the TCP analysis is checked against Wireshark's own), systemd-analyze (the probe's unit is
# rated), and debootstrap + qemu-user-static + binfmt-support (arm64 and armhf chroots prove a
# Raspberry Pi's install set offline)
APT_TEST_PACKAGES := chromium tmux tshark systemd debootstrap qemu-user-static binfmt-support
# The Vagrant lab on this machine: Debian's vagrant and its libvirt provider, qemu, and debootstrap for
# the local box (make box); dnsmasq serves the management network's DHCP.
APT_VAGRANT_PACKAGES := vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients qemu-system-x86 \
                        qemu-utils debootstrap dnsmasq-base e2fsprogs openssh-client
STAMP := $(VENV)/.tcplab-installed
INVENTORY ?= inventory/netns.yml
PLAYBOOK_ARGS := -i $(INVENTORY) $(if $(DELAY),-e tcplab_delay=$(DELAY),) $(ARGS)

.PHONY: deps apt apt-test apt-vagrant film test test-vagrant box down lint

deps: apt $(STAMP)

# apt-get runs only when a package is missing, so a second `make` touches nothing.
apt: PACKAGES = $(APT_PACKAGES)
apt-test: PACKAGES = $(APT_TEST_PACKAGES)
apt-vagrant: PACKAGES = $(APT_VAGRANT_PACKAGES)
apt apt-test apt-vagrant:
	@missing=""; \
	for p in $(PACKAGES); do \
	  dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update && apt-get install -y --no-install-recommends $$missing; \
	fi

# The system python explicitly (not whatever python3 comes first on PATH, e.g. a pyenv shim).
$(VENV)/bin/python:
	$(PY) -m venv $(VENV)

$(STAMP): pyproject.toml | $(VENV)/bin/python
	$(VENV)/bin/pip install --quiet -e '.[control,test]'
	touch $@

# On a terminal, ansible-playbook writes to runs/film-<time>.log (its tail is shown if it fails) while
# `tcplab watch` shows the run live; it stops when ansible-playbook ends, even before any run began.
# Elsewhere (CI, a pipe) ansible-playbook prints as usual. Either way make exits with its status.
film: deps
	@rc=0; \
	if [ -t 1 ]; then \
	  mkdir -p runs; log=runs/film-$$(date +%Y%m%d-%H%M%S).log; \
	  echo "ansible-playbook's output goes to $$log; the live view starts with the run"; \
	  (trap - INT; exec $(VENV)/bin/ansible-playbook $(PLAYBOOK_ARGS) lab.yml >"$$log" 2>&1 </dev/null) & pid=$$!; \
	  $(VENV)/bin/tcplab watch --runs runs --since-now --until-pid $$pid --scenario scenarios/seed.yml || true; \
	  if kill -0 $$pid 2>/dev/null; then echo "waiting for ansible-playbook to finish ($$log)"; fi; \
	  wait $$pid || rc=$$?; \
	  if [ $$rc -ne 0 ]; then echo "ansible-playbook failed (exit $$rc); the end of $$log:"; tail -n 30 "$$log"; fi; \
	else \
	  $(VENV)/bin/ansible-playbook $(PLAYBOOK_ARGS) lab.yml || rc=$$?; \
	fi; \
	run=$$(ls -1dt runs/*/ 2>/dev/null | head -n1); \
	if [ -n "$$run" ]; then echo "The run's files are in $$(cd "$$run" && pwd)/ : open film.html in a browser, read story.md, or .venv/bin/tcplab replay it"; fi; \
	exit $$rc

test: deps apt-test
	$(VENV)/bin/pytest

# The local Vagrant box (debootstrap -> image -> libvirt box), cached in /var/cache/tcplab/box.
box: deps apt-vagrant
	$(VENV)/bin/python -m controller.vmlab box

# Two VMs (the local box under qemu's software emulation), lab.yml on them with the seed at 0.3 s,
# the checks of tests/vagrant; `vagrant destroy -f` and the host put back always, also on failure
# or Ctrl-C (the trap covers what pytest cannot catch). The run's files stay in runs/.
test-vagrant: deps apt-vagrant
	@trap '$(VENV)/bin/python -m controller.vmlab down >/dev/null 2>&1 || true' EXIT; \
	$(VENV)/bin/pytest tests/vagrant

down: deps
	$(VENV)/bin/tcplab lab down

# ansible-lint's production profile (a test dependency; tests/unit/test_ansible_lint.py runs it too)
lint: deps
	$(VENV)/bin/ansible-lint --profile production lab.yml playbooks
