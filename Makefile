# The two commands of the README: `make run` and `make test`.
# Both create .venv and install what this Debian machine lacks (as root, with apt).

VENV   := .venv
BIN    := $(VENV)/bin
# Started as root, the server runs its processes as LFS_USER, which must be
# able to run the venv's Python: as root prefer Debian's (a pyenv under /root
# is out of its reach).
PYTHON ?= $(if $(and $(filter 0,$(shell id -u)),$(wildcard /usr/bin/python3)),/usr/bin/python3,python3)
APT    := DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
LFS_USER ?= lfs

# $(call need,COMMAND,DEBIAN-PACKAGES): install the packages when COMMAND is missing.
define need
	@command -v $(1) >/dev/null 2>&1 || PATH="$$PATH:/usr/sbin:/sbin" command -v $(1) >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing $(2) with apt"; \
	    [ -n "$$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null)" ] || apt-get update -qq; \
	    $(APT) $(2) >/dev/null; \
	  else echo "$(1) is missing: install the Debian package(s) $(2), or run make as root" >&2; exit 1; fi; }
endef

.PHONY: run test lint bench deps-python deps-run deps-reach deps-test clean

$(BIN)/.installed: pyproject.toml | deps-python
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $@

deps-python:
	@$(PYTHON) -c "import ensurepip, venv" 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then echo "installing python3-venv with apt"; \
	    [ -n "$$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null)" ] || apt-get update -qq; \
	    $(APT) python3-venv >/dev/null; \
	  else echo "$(PYTHON) cannot make a venv: install the Debian package python3-venv" >&2; exit 1; fi; }

# As root: nginx, and the unprivileged system user the server drops to.
deps-run:
	$(call need,nginx,nginx)
	@id -u "$(LFS_USER)" >/dev/null 2>&1 || [ "$$(id -u)" != 0 ] || { \
	  echo "creating the system user $(LFS_USER) (LFS_USER: the server's processes run as it)"; \
	  PATH="$$PATH:/usr/sbin:/sbin" useradd --system --no-create-home --shell /usr/sbin/nologin "$(LFS_USER)"; }

# As root, LFS_USER runs the venv's Python and the code in this checkout: it
# must be able to pass through every folder above it (a checkout under /root,
# 0700, is out of its reach). Grant just that, with an ACL entry per folder.
deps-reach: deps-run
	@[ "$$(id -u)" != 0 ] || { \
	  dir=; for part in $$(echo "$(CURDIR)" | tr '/' ' '); do dir="$$dir/$$part"; \
	    runuser -u "$(LFS_USER)" -- test -x "$$dir" 2>/dev/null && continue; \
	    command -v setfacl >/dev/null 2>&1 || { echo "installing acl with apt"; \
	      [ -n "$$(find /var/lib/apt/lists -maxdepth 1 -name '*Packages*' -mmin -1440 2>/dev/null)" ] || apt-get update -qq; \
	      $(APT) acl >/dev/null; }; \
	    echo "letting $(LFS_USER) pass through $$dir (setfacl -m u:$(LFS_USER):x)"; \
	    setfacl -m "u:$(LFS_USER):x" "$$dir"; \
	  done; }

deps-test: deps-reach
	$(call need,git,git)
	$(call need,git-lfs,git-lfs)
	$(call need,curl,curl)
	$(call need,openssl,openssl)
	$(call need,pg_ctlcluster,postgresql)
	$(call need,chromium,chromium)
	$(call need,chromedriver,chromium-driver)

run: deps-reach $(BIN)/.installed
	LFS_DATA_DIR="$${LFS_DATA_DIR:-./data}" $(BIN)/lfs-server serve

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: deps-test $(BIN)/.installed lint
	$(BIN)/pytest

bench: deps-test $(BIN)/.installed
	$(call need,wrk,wrk)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
