# Two commands do all set-up on a fresh machine:
#   make demo   - install into .venv, fit the bundled sample, write a mesh
#   make test   - install into .venv, run the whole test suite
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.siren3d-installed
RES    ?= 256

.PHONY: install demo test test-fast bench sample clean

$(STAMP): pyproject.toml constraints.txt .ci/bootstrap
	VENV=$(VENV) bash .ci/bootstrap
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/siren3d fit data/sample.ply --out runs/sample
	$(VENV)/bin/siren3d mesh --run runs/sample --res $(RES)

test: $(STAMP)
	$(PY) -m pytest

test-fast: $(STAMP)
	$(PY) -m pytest -m "not slow"

bench: $(STAMP)
	$(PY) benchmarks/train_step.py

sample: $(STAMP)
	$(PY) data/make_sample.py

clean:
	rm -rf runs .pytest_cache
