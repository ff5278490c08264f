# make test / make demo work on a fresh machine: they create .venv and install everything first,
# from the lock file (exact versions of every dependency, transitive ones included).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
LOCK := requirements/lock.txt
# On these machines torch must come from the local CPU build (a pip constraints file caps torch);
# elsewhere override, e.g.  make test TORCH_SPEC="torch>=2.2"
# The lock leaves torch out (it pins torch's own dependencies): torch is always TORCH_SPEC.
TORCH_SPEC ?= torch==2.13.0
# Threads per process for the test suite (torch, BLAS); results do not depend on it.
TEST_THREADS ?= 2
STAMP := $(VENV)/.installed
LATEST := .venv-latest

.PHONY: install test test-latest test-slow test-slurm demo docs bench lock clean

# Locked install: the lock without resolving (--no-deps), then torch (its dependencies are already
# satisfied from the lock), then biofa itself built with the locked setuptools; `pip check` fails
# if anything is missing or inconsistent.
$(STAMP): pyproject.toml $(LOCK) Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --no-deps -r $(LOCK)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	$(PY) -m pip check
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -m "not slow and not slurm"

# What a user who runs `pip install biofa` gets: the newest versions pyproject's ranges allow.
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip
	printf '%s\n' "$(TORCH_SPEC)" > $(LATEST)/torch.txt
	$(LATEST)/bin/python -m pip install -q "$(TORCH_SPEC)"
	# eager upgrades would replace torch by the newest release (a CUDA build): keep TORCH_SPEC
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -c $(LATEST)/torch.txt \
	    -e ".[test,docs]"
	$(LATEST)/bin/python -m pip check
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/freeze.txt
	OMP_NUM_THREADS=$(TEST_THREADS) $(LATEST)/bin/python -m pytest -q -m "not slow and not slurm"

test-slow: $(STAMP)
	OMP_NUM_THREADS=$(TEST_THREADS) $(PY) -m pytest -q -m slow

# The SLURM executor against a real one-node cluster (installs and starts it; needs root once).
test-slurm: $(STAMP)
	bash tools/slurm-cluster.sh start
	BIOFA_SLURM_START=1 OMP_NUM_THREADS=1 $(PY) -m pytest -q -m slurm tests/test_slurm.py

# The default study with seed 0 at the two learning rates its record chose (0.003 and 0.01): 32 of
# its 320 runs, then each run against the committed record of the full study (records/quickstart/):
# on the record's machine and library versions every run agrees bit for bit.
# The full study: biofa run experiments/quickstart.toml --jobs 2.
demo: $(STAMP)
	$(VENV)/bin/biofa run experiments/quickstart.toml --jobs 2 --progress --set 'grid.seed=[0]' \
	    --set 'search.train.optimizer.lr=[0.003,0.01]' --out results/quickstart_demo
	$(VENV)/bin/biofa compare results/quickstart_demo records/quickstart

docs: $(STAMP)
	$(PY) -m sphinx -b html -W --keep-going docs docs/_build/html

bench: $(STAMP)
	$(PY) benchmarks/run_all.py

# Regenerate the lock with pip-tools for this Python: keeps current pins that still satisfy
# pyproject.toml; `make lock LOCK_ARGS=--upgrade` moves every pin to the newest allowed version.
# torch is resolved as TORCH_SPEC (never the CUDA build) but left out of the lock (unsafe-package).
lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install -q "pip-tools>=7.4,<8"
	printf '%s\n' "$(TORCH_SPEC)" > .venv-lock/torch.txt
	CUSTOM_COMPILE_COMMAND="make lock" .venv-lock/bin/pip-compile -q $(LOCK_ARGS) \
	    --extra test --extra docs --all-build-deps --unsafe-package torch \
	    --constraint .venv-lock/torch.txt --strip-extras \
	    --no-emit-index-url --no-emit-find-links --no-emit-trusted-host \
	    --output-file $(LOCK) pyproject.toml

clean:
	rm -rf $(VENV) $(LATEST) .venv-lock docs/_build docs/auto_tutorials docs/gen_modules results .pytest_cache
