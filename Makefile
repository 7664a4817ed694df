# Two entry points for a fresh clone: `make demo` (the main job) and `make test`.
# Each builds its own virtual environment, installing torch==2.13.0 (the CPU build)
# before the project so that nothing pulls a CUDA build of torch.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-nanonet
TEACHER ?= sentence-transformers/all-MiniLM-L6-v2

.PHONY: install demo test clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/nanonet info $(TEACHER)
	$(BIN)/nanonet info $(TEACHER) --layers 0,2,4 --global-every 3 --local-window 128

test: $(STAMP)
	$(BIN)/python -m pytest

clean:
	rm -rf $(VENV) .pytest_cache
