# homeredirect: `make run` starts a director on loopback; `make test` runs the whole suite.
# Both install what they need first (a virtualenv in .venv; Debian packages for the tests).

# Debian's interpreter is built with PGO/LTO and is markedly faster than an unoptimised
# build; use it when it can make virtualenvs, else whatever python3 is on PATH.
PYTHON ?= $(shell /usr/bin/python3 -c 'import ensurepip, venv' >/dev/null 2>&1 && echo /usr/bin/python3 || echo python3)
VENV := .venv
BIN := $(VENV)/bin
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Real peers the integration tests start: SIPp (sip-tester), Redis, OpenLDAP's slapd and
# its command-line tools, a Samba AD domain controller (samba with its provisioning files
# and AD database modules, ldb-tools to extend its schema offline) and Cyrus SASL's GSSAPI
# plug-in for Kerberos binds; gss-ntlmssp, the NTLM initiator the MS-SIPAE tests drive;
# MIT's KDC, kadmin.local and kinit for the MS-SIPAE Kerberos tests' throwaway realm;
# pidgin-sipe, the real Microsoft-family client, driven through libpurple by a small C
# program the test compiles (gcc, pkg-config, libpurple-dev); winbind for ntlm_auth, which
# checks NTLM responses at the test domain controller.
APT_PACKAGES := sip-tester redis-server slapd ldap-utils \
	samba samba-ad-provision samba-dsdb-modules ldb-tools libsasl2-modules-gssapi-mit \
	gss-ntlmssp krb5-kdc krb5-admin-server krb5-user \
	pidgin-sipe libpurple-dev pkg-config gcc winbind
# Daemons Debian starts when it installs these packages (package:daemon): Samba's file
# sharing on every interface, slapd on every interface, redis-server on loopback, MIT's
# KDC and kadmind (for the realm debconf may have set up), winbindd. The tests
# start their own servers (the domain controller in a private network namespace), so `apt`
# stops and disables each again, but only when it has just installed its package itself.
PACKAGE_DAEMONS := samba:smbd samba:nmbd samba:samba-ad-dc slapd:slapd redis-server:redis-server \
	krb5-kdc:krb5-kdc krb5-admin-server:krb5-admin-server winbind:winbind
# What `install` compiles against: python-ldap (the `ldap` extra, part of `dev`) has no Linux
# wheel on PyPI, so pip builds it from source with OpenLDAP's and Cyrus SASL's headers;
# likewise gssapi (in `dev` for the NTLM tests) with MIT krb5's (libkrb5-dev).
APT_BUILD_PACKAGES := libldap-dev libsasl2-dev python3-dev libkrb5-dev

.PHONY: install run cluster test lint typecheck unit integration apt apt-build bench clean

install: $(VENV)/.installed

$(VENV)/.installed: setup.cfg pyproject.toml | apt-build
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

# The three-process example: a director, two home servers and the DNS service on 127.0.0.1
# (ports 5170-5176), certificates and bindings in run/cluster/; Ctrl-C stops all of them.
cluster: install
	$(BIN)/python examples/cluster/run.py

apt:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing || exit 1; \
		for pair in $(PACKAGE_DAEMONS); do p=$${pair%%:*}; d=$${pair#*:}; \
			case " $$missing " in *" $$p "*) \
				if [ -d /run/systemd/system ]; then $(SUDO) systemctl disable --now $$d >/dev/null 2>&1 || true; \
				elif [ -x /etc/init.d/$$d ]; then $(SUDO) /etc/init.d/$$d stop >/dev/null 2>&1 || true; fi;; \
			esac; \
		done; \
	fi

apt-build:
	@$(MAKE) --no-print-directory apt APT_PACKAGES="$(APT_BUILD_PACKAGES)"

lint: install
	$(BIN)/ruff check homeredirect tests examples bench twisted
	$(BIN)/ruff format --check homeredirect tests examples bench twisted

typecheck: install
	$(BIN)/mypy

test: apt install lint typecheck
	$(BIN)/pytest

bench: install
	$(MAKE) apt APT_PACKAGES="sip-tester kamailio"
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) run build *.egg-info _trial_temp* twisted/plugins/dropin.cache
