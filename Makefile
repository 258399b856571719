# fmuia: two commands do all set-up on a fresh machine.
#   make run   generate the embedded phantom, check it and run the notebook suite (cpu-smoke)
#   make test  run every test, the notebooks (nbval) included
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
FMUIA := $(VENV)/bin/fmuia
STAMP := $(VENV)/.fmuia-installed
OUT ?= runs
PYTEST_ARGS ?=

.PHONY: run test install bench clean

# Create the virtual environment and install fmuia with its test tools. The
# constraints file pins torch for our own installs; the package itself only sets ranges.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check -q -c constraints.txt -e ".[test]"
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (fmuia)" >/dev/null
	touch $(STAMP)

install: $(STAMP)

# The phantom's size is the cpu-smoke profile's (notebooks/profiles/cpu-smoke.yaml:
# phantom_train, phantom_val); the suite then runs the six notebooks on it.
run: $(STAMP)
	$(FMUIA) data phantom --out $(OUT)/phantom --train 96 --val 16 --overwrite
	$(FMUIA) data check $(OUT)/phantom/train
	$(FMUIA) data check $(OUT)/phantom/val
	$(FMUIA) suite --profile cpu-smoke --data $(OUT)/phantom --out $(OUT)/suite

# Unit tests, then every notebook executed at its default parameters (nbval, in this
# environment's kernel); cells marked NBVAL_CHECK_OUTPUT must reproduce their outputs.
test: $(STAMP)
	$(PY) -m pytest --nbval-lax --nbval-current-env $(PYTEST_ARGS) tests notebooks

bench: $(STAMP)
	for b in benchmarks/*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
