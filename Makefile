# `make run` and `make test` work on a fresh clone: both create .venv and install into it first.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.olsmooth-installed

.PHONY: run test bench results lint clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[toolkit,attacks,dev,lightning]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/olsmooth train --out runs/default --force

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m benchmarks.loss_speed
	$(PY) -m benchmarks.trainer_overhead
	$(PY) -m benchmarks.accuracy --quick

# The accuracy study of docs/results.md (the shipped study file accuracy-fashion-mnist): about 1 h 20 min on 2 CPU
# cores; stop and rerun to continue. Publishes the pages docs/results.md quotes, each with its per-run CSV.
results: $(STAMP)
	$(PY) -m benchmarks.accuracy --study accuracy-fashion-mnist --figures docs/figures --publish docs

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs
