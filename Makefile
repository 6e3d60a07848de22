# zmeet: the commands CI and the README use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SYSTEM_PACKAGES := gcc libc6-dev libzmq3-dev opencv-doc espeak-ng tcpdump xvfb x11-utils x11-xserver-utils libportaudio2 sox imagemagick libgl1 libegl1 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
PYTEST_ARGS ?=

.PHONY: run test install system-deps lint bench bench-smoke bench-system-deps clean

run: $(STAMP)
	$(BIN)/zmeet broker

test: system-deps $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml setup.py zmeet/broker/_mediafwd.pyx
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# The tests drive a real X screen (Xvfb), real audio (PortAudio, sox) and OpenCV windows; gcc
# builds the broker's compiled media forwarder (setup.py), libzmq3-dev's zmq.h checks it;
# opencv-doc brings the sample videos the tests use as cameras, espeak-ng their speech
# (tests/testmedia.py), so a clone needs nothing beside it.
system-deps:
	@missing=""; for p in $(SYSTEM_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "missing system packages:$$missing"; \
	  echo "install them with: sudo apt-get install$$missing"; exit 1; \
	fi

# what CI checks beside the tests: ruff's lint rules everywhere, mypy's types on the package and
# the CLI (pyproject.toml has both configurations); any finding fails
lint: $(STAMP)
	$(BIN)/ruff check zmeet cli tests benchmarks
	$(BIN)/mypy zmeet cli

# Benchmarks (benchmarks/README.md): the `bench` extra, and redis-server for the Redis baseline.
BENCH_STAMP := $(VENV)/.bench-installed

$(BENCH_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[test,dev,bench]'
	touch $(BENCH_STAMP)

bench-system-deps: system-deps
	@command -v redis-server >/dev/null && exit 0; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing system packages: redis-server"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends redis-server >/dev/null; \
	else \
	  echo "missing system packages: redis-server"; \
	  echo "install them with: sudo apt-get install redis-server"; exit 1; \
	fi

# the full suite (~10 minutes on 2 cores): benchmarks/results/<date>.json, <date>.md, PNG plots
bench: bench-system-deps $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.suite

# the short suite for CI: fails only if something was lost or a figure is missing
bench-smoke: bench-system-deps $(BENCH_STAMP)
	$(BIN)/python -m benchmarks.suite --smoke

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
