# make test / make demo work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# On these machines torch must come from the local CPU build; elsewhere override, e.g.
#   make test TORCH_SPEC="torch>=2.2"
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install test test-slow test-slurm demo docs bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(PY) -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

# The SLURM executor against a real one-node cluster (installs and starts it; needs root once).
test-slurm: $(STAMP)
	bash tools/slurm-cluster.sh start
	BIOFA_SLURM_START=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slurm tests/test_slurm.py

demo: $(STAMP)
	$(VENV)/bin/biofa run experiments/quickstart.toml --jobs 2

docs: $(STAMP)
	$(PY) -m sphinx -b html -W --keep-going docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) docs/_build docs/auto_tutorials docs/gen_modules results .pytest_cache
