# The entry point for people and CI alike: `make install`, `make test`, `make demo`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install redis-server docker-registry git build-user podman lint format test demo bench flower dev clean distclean

help:
	@echo "make install   create $(VENV) and install Conveyor with constraints.txt (+ redis-server, docker-registry, git, podman)"
	@echo "make test      lint, type-check, then the whole test suite"
	@echo "make lint      ruff check, ruff format --check, mypy"
	@echo "make format    ruff format + ruff check --fix"
	@echo "make demo      run the reference pipeline end to end (examples/demo.py)"
	@echo "make bench     benchmarks against raw Celery and the raw S3 client"
	@echo "make dev       local Redis + S3 + workers + API (conveyor dev)"
	@echo "make flower    Flower on the broker"
	@echo "make clean     caches and build output (distclean also removes $(VENV))"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall only when the dependency declarations change.
$(STAMP): pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check -c constraints.txt -e '.[dev]'
	@touch $@

install: $(STAMP) redis-server docker-registry git build-user podman

# Tests and `conveyor dev` start their own redis-server; install it when we can.
redis-server:
	@if command -v redis-server >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "redis-server not found: installing it with apt-get"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq redis-server >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }; \
	else \
		echo "WARNING: redis-server not found on PATH. Install it (apt-get install redis-server," \
			"brew install redis) or set CONVEYOR_REDIS_URL / CONVEYOR_TEST_REDIS_URL." >&2; \
	fi

# The ECR source's tests run the reference OCI registry (Debian's docker-registry package).
docker-registry:
	@if command -v docker-registry >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "docker-registry not found: installing it with apt-get"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq docker-registry >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq docker-registry >/dev/null; }; \
	else \
		echo "WARNING: docker-registry not found on PATH. Install Debian's docker-registry" \
			"package (the reference OCI distribution server) for the ECR source's tests." >&2; \
	fi

# Git sources run the git binary; their tests serve repositories with `git daemon` and
# `git http-backend` (both ship with Debian's git package).
git:
	@if command -v git >/dev/null 2>&1 && [ -x "$$(git --exec-path)/git-http-backend" ]; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "git not found: installing it with apt-get"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq git >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq git >/dev/null; }; \
	else \
		echo "WARNING: git not found on PATH. Install it (apt-get install git) for git sources." >&2; \
	fi

# Builds run as this unprivileged user when the worker is root (workers also create it at
# start); as any other user, builds run as that user and workers say so.
BUILD_USER ?= conveyor-build
build-user:
	@if [ "$$(id -u)" = 0 ] && ! id -u $(BUILD_USER) >/dev/null 2>&1; then \
		echo "creating the build user $(BUILD_USER)"; \
		useradd --system --user-group --no-create-home \
			--shell "$$(command -v nologin || echo /usr/sbin/nologin)" $(BUILD_USER); \
	fi

# Builds of projects named in CONVEYOR_BUILD_IMAGES run in a container; their tests need an
# engine that answers. Without Docker, Debian's podman (and runc, which also runs on hosts
# with a hybrid cgroup v1/v2 layout where crun refuses to).
podman:
	@if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then \
		:; \
	elif command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1; then \
		:; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "no container engine answers: installing podman and runc with apt-get"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq podman runc >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq podman runc >/dev/null; }; \
	else \
		echo "WARNING: no container engine (docker, podman) found. Install one for builds" \
			"in images (CONVEYOR_BUILD_IMAGES); their tests skip without one." >&2; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Exit code 5 means pytest collected nothing: that is a failure, said out loud.
test: install lint
	@$(BIN)/pytest -q -p no:cacheprovider $(PYTEST_ARGS) tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: FAILED, pytest collected no tests" >&2; fi; \
	exit $$rc

demo: install
	$(BIN)/python examples/demo.py

bench: install
	$(BIN)/python -m benchmarks
	$(BIN)/python -m benchmarks.git_source

flower: install
	$(BIN)/conveyor flower

dev: install
	$(BIN)/conveyor dev

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist *.egg-info
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
