# retinue: `make demo` and `make test` set up everything they need on Debian 12, as root.

PYTHON   ?= /usr/bin/python3.11
VENV     ?= $(CURDIR)/.venv
PREFIX   ?= /usr/local
DEB_PKGS := runc crun busybox-static rsync docker.io containerd podman python3-venv iproute2 gcc libc6-dev musl-tools skopeo umoci nginx-light shellcheck
export RETINUE_CONFIG ?= $(CURDIR)/configs/config.toml

.PHONY: all deps venv demo test bench lint install clean

all: venv

# Debian's packages, installed only when one is missing (apt-get update is slow).
deps:
	@missing=""; for p in $(DEB_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# Debian's own python3.11, never a pyenv shim: a shim adds ~100 ms to every runtime call.
venv: deps
	@test -x $(VENV)/bin/python3 || $(PYTHON) -m venv $(VENV)
	@# setuptools copies into build/lib and never removes: a moved or deleted module would ship on.
	@rm -rf build/lib
	@$(VENV)/bin/pip install -q --disable-pip-version-check '.[test]'
	@$(VENV)/bin/python -m retinue.cli.launcher --bin-dir $(VENV)/bin >/dev/null

demo: venv
	@$(VENV)/bin/retinue demo

test: venv
	$(VENV)/bin/python -m pytest -q tests

# shellcheck on the launchers' sources (their placeholders sit where a case pattern goes, which
# SC2195 takes for a pattern that never matches) and on the launchers rendered from them.
lint: venv
	$(VENV)/bin/ruff check runtime hooks tests
	$(VENV)/bin/mypy
	shellcheck -e SC2195 runtime/cli/sh/*.sh
	@d=$$(mktemp -d) && \
	$(VENV)/bin/python -c 'import sys; from retinue.cli import launcher as l; \
		[open(f"{sys.argv[1]}/{n}", "w").write(r(sys.executable, "/site", f"/bin/{n}")) \
		 for n, r in (("retinue-runtime", l.render_runtime), ("retinue-hook", l.render_hook))]' "$$d" && \
	shellcheck "$$d/retinue-runtime" "$$d/retinue-hook"; rc=$$?; rm -rf "$$d"; exit $$rc

# Side by side with runc in one run; medians and ratios, PASS/MISS against the targets.
bench: venv
	$(VENV)/bin/python tests/bench/bench.py
	$(VENV)/bin/python tests/bench/services_bench.py
	$(VENV)/bin/python tests/bench/seccomp_bench.py
	$(VENV)/bin/python tests/bench/cri_bench.py
	$(VENV)/bin/python tests/bench/init_bench.py
	$(VENV)/bin/python tests/bench/sidecar_bench.py

# Put the launchers where engines expect them and register nothing: see `retinue install`.
install: venv
	$(VENV)/bin/python -m retinue.cli.launcher --bin-dir $(PREFIX)/bin

clean:
	rm -rf $(VENV) build *.egg-info /tmp/retinue-demo
