# homeredirect: `make run` starts a director on loopback; `make test` runs the whole suite.
# Both install what they need first (a virtualenv in .venv; Debian packages for the tests).

# Debian's interpreter is built with PGO/LTO and is markedly faster than an unoptimised
# build; use it when it can make virtualenvs, else whatever python3 is on PATH.
PYTHON ?= $(shell /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real peers the integration tests start: SIPp (sip-tester), Redis, OpenLDAP's slapd and
# its command-line tools.
APT_PACKAGES := sip-tester redis-server slapd ldap-utils

.PHONY: install run test lint typecheck unit integration apt bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]' --config-settings editable_mode=compat
	touch $@

run/server.pem: | install
	$(BIN)/python -m homeredirect.tools.certs --out run/

run: install run/server.pem
	@echo
	@echo "homeredirect director on 127.0.0.1: UDP+TCP 5070, TLS 5071 (examples/director.toml)."
	@echo "Try it from another terminal:"
	@echo "  $(BIN)/python -m homeredirect.tools.register sip:alice@example.com --server tls:127.0.0.1:5071 --ca run/ca.pem"
	@echo
	$(BIN)/twistd -n --pidfile= homeredirect --config examples/director.toml

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

lint: install
	$(BIN)/ruff check homeredirect tests examples bench twisted

typecheck: install
	$(BIN)/mypy

test: install apt lint typecheck
	$(BIN)/pytest

bench: install
	$(MAKE) apt APT_PACKAGES="sip-tester kamailio"
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) run build *.egg-info _trial_temp* twisted/plugins/dropin.cache
