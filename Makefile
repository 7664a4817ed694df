# Two entry points for a fresh clone: `make demo` (the main job, end to end) and `make test`.
# Each builds its own virtual environment, installing torch==2.13.0 (the CPU build)
# before the project so that nothing pulls a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-nanonet
DEMO_DATA ?= data/ag_news_sample
DEMO_RUN ?= runs/demo
DEMO_STEPS ?= 40

.PHONY: install demo test bench-env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,export,plot,dev]'
	touch $(STAMP)

install: $(STAMP)

# train a cohort on the bundled ag_news sample (10 labels per class), export the chosen
# student, classify a few sentences with the torch-free runtime, benchmark the bundle
demo: $(STAMP)
	rm -rf $(DEMO_RUN)
	$(BIN)/nanonet train --data $(DEMO_DATA) --labels-per-class 10 --seed 1 --steps $(DEMO_STEPS) --eval-every 10 --threads 2 --out $(DEMO_RUN)
	$(BIN)/nanonet export $(DEMO_RUN)/student --out $(DEMO_RUN)/bundle
	$(BIN)/nanonet predict $(DEMO_RUN)/bundle "Stocks slid as oil prices hit a record high." \
		"The Red Sox beat the Yankees in extra innings." "NASA's new probe sends back images of Saturn's rings." \
		"Rebels and government troops agree to a ceasefire in the north."
	$(BIN)/nanonet bench $(DEMO_RUN)/bundle --data $(DEMO_DATA)/test.jsonl --batch-sizes 1,32 --threads 2 --seconds 3

test: $(STAMP)
	$(BIN)/python -m pytest

# a second environment for bench/cpu_inference.py's optimum row (optimum-onnx pins transformers < 4.58)
bench-env: .venv-optimum/.installed
.venv-optimum/.installed:
	$(PYTHON) -m venv .venv-optimum
	.venv-optimum/bin/python -m pip install -q torch==2.13.0
	.venv-optimum/bin/python -m pip install -q 'optimum-onnx[onnxruntime]'
	touch $@

clean:
	rm -rf $(VENV) .venv-optimum .pytest_cache runs
