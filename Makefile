# fmuia: two commands do all set-up on a fresh machine.
#   make run   run the notebook suite under the cpu-smoke profile (it generates and checks the phantom)
#   make test  run every test, the notebooks (nbval) included
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMUIA := $(VENV)/bin/fmuia
STAMP := $(VENV)/.fmuia-installed
OUT ?= runs
PYTEST_ARGS ?=

.PHONY: run test install bench clean

# Create the virtual environment and install fmuia with Jupyter and its test tools. The
# constraints file pins torch for our own installs; the package itself only sets ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[lab,test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fmuia)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The profile (fmuia_lib/profiles/cpu-smoke.yaml) says which data: the suite makes the
# phantom when it is missing, checks both data roots as `fmuia data check` does, then runs
# the six notebooks on it.
run: $(STAMP)
	$(FMUIA) suite --profile cpu-smoke --out $(OUT)/suite

# Unit tests (tests/test_colab.py included: the wheel in a fresh environment runs the series
# under the ci-tiny profile), then every notebook executed at its default parameters (nbval,
# in this environment's kernel); cells marked NBVAL_CHECK_OUTPUT must reproduce their outputs,
# times and absolute paths masked (notebooks/nbval-sanitize.cfg).
# TEST_WORKERS pytest-xdist processes share the work, one file at a time, in the order
# conftest.py sets (the cpu-smoke training, which notebooks 03-05 and a few tests share, first);
# each computes on one thread (conftest.py), so they do not fight over the cores.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15 \
		--nbval-lax --nbval-current-env --nbval-sanitize-with notebooks/nbval-sanitize.cfg $(PYTEST_ARGS) tests notebooks

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
