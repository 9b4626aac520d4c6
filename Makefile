# Two commands do all the set-up on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.snugtune-installed

.PHONY: install demo test lint bench clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --no-cache-dir --upgrade pip

# animal-mnist (the demo's data) declares TensorFlow and pandas, which it does not need to read
# its data: it goes in last, without dependencies, so that pip's check of what is installed
# has nothing to complain about.
$(STAMP): $(PY) pyproject.toml
	$(PIP) install -q --no-cache-dir "torch==2.14.1" "torchvision==0.29.1"
	$(PIP) install -q --no-cache-dir -e ".[dev]"
	$(PIP) install -q --no-cache-dir --no-deps "animal-mnist>=0.4"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/snugtune demo --out runs/demo

test: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -n 2 --dist loadfile

bench: install
	$(PY) benchmarks/planner_accuracy.py --out benchmarks/results/planner_accuracy.json
	$(PY) benchmarks/throughput.py --out benchmarks/results/throughput.json
	$(PY) benchmarks/time_to_accuracy.py --out benchmarks/results/time_to_accuracy.json
	$(PY) benchmarks/time_to_accuracy.py --budgets 2m 5m --out benchmarks/results/time_budget.json
	$(PY) benchmarks/unseen_images.py --out benchmarks/results/unseen_images.json
	$(PY) benchmarks/data_scale.py --sizes 10000 100000 1000000 --photos 300 --out benchmarks/results/data_scale.json

clean:
	rm -rf $(VENV) runs demo_data .pytest_cache .ruff_cache .mypy_cache
