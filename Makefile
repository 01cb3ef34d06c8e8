# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
# OFA's GPT-2 BPE files (encoder.json, vocab.bpe, dict.txt); tests that need them skip with a reason when absent.
export OFA_BPE_DIR ?= $(abspath ../shared/ofa_bpe)

.PHONY: install demo test lint test-slow bench tcmalloc clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip >/dev/null
	$(PY) -m pip install -e '.[dev]'
	@touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ofa-demo

test: $(STAMP) lint
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache

test-slow: $(STAMP)
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && apt-get install -y chromium chromium-driver) || \
		echo "chromium not installed (needs root): the ofa-serve browser test will skip"
	$(PY) -m pytest -q -m slow

# gperftools' tcmalloc for the memory-lean benchmark rows (system copy, or Debian's package unpacked under .cache/;
# no root). Optional: without it those rows run on glibc. Prints the library's path.
tcmalloc:
	@bash benchmarks/harness/get_tcmalloc.sh .cache/tcmalloc

# The CPU suites write into benchmarks/results/ (untracked); the report regenerates docs/benchmarks.md from it.
bench: $(STAMP)
	-@bash benchmarks/harness/get_tcmalloc.sh .cache/tcmalloc
	$(PY) benchmarks/suites/scaling.py
	$(PY) benchmarks/suites/run.py
	$(PY) benchmarks/suites/train_rounds.py --rounds 3
	$(PY) benchmarks/suites/data_pipeline.py --json benchmarks/results/data_results.json
	$(PY) benchmarks/harness/report.py

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
