# zmeet: the commands CI and the README use.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SYSTEM_PACKAGES := xvfb x11-utils x11-xserver-utils libportaudio2 sox imagemagick libgl1 libegl1 libxkbcommon-x11-0 libfontconfig1 libdbus-1-3
PYTEST_ARGS ?=

.PHONY: run test install system-deps lint bench-smoke clean

run: $(STAMP)
	$(BIN)/zmeet broker

test: system-deps $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

# The tests drive a real X screen (Xvfb), real audio (PortAudio, sox) and OpenCV windows.
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

lint: $(STAMP)
	$(BIN)/ruff check zmeet cli tests benchmarks

bench-smoke: $(STAMP)
	$(BIN)/python -m benchmarks.chat_rtt --count 2000
	$(BIN)/python -m benchmarks.media_fps --seconds 5

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
