# Two set-up commands: `make serve` and `make test`. Both create the venv when missing.
PYTHON ?= python3
VENV := .venv
TOOLS_VENV := .venv-tools
PY := $(VENV)/bin/python
ENGINE ?= engines/qwen-tiny
CHECKPOINT ?= checkpoints/qwen-tiny
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
OPENAI_PORT ?= 9000
export GRPC_PORT HTTP_PORT METRICS_PORT OPENAI_PORT

SOAK_MINUTES ?= 10
BIND_ADDRESS ?= 127.0.0.1
export BIND_ADDRESS

.PHONY: venv engine repo serve test soak genai-perf clean

# Last step: perf_analyzer/perf_client run by hand. The wheel's binaries move to libexec/ and tools/perf_analyzer.sh,
# which finds their libraries, takes their place; a binary that pip reinstalls is moved again (docs/tools.md).
$(VENV)/.installed: pyproject.toml requirements/cpu.txt tools/perf_analyzer.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/cpu.txt
	$(PY) -m pip install -q --no-deps -e .
	mkdir -p $(VENV)/libexec
	for b in perf_analyzer perf_client; do \
	  if [ -f $(VENV)/bin/$$b ] && ! grep -qs 'qwen-triton perf_analyzer wrapper' $(VENV)/bin/$$b; then \
	    mv -f $(VENV)/bin/$$b $(VENV)/libexec/$$b; fi; \
	  install -m 755 tools/perf_analyzer.sh $(VENV)/bin/$$b; \
	done
	touch $@

venv: $(VENV)/.installed

# Triton's interpreter runs the CUDA kernels on CPU for tests/unit/test_kernels_interpreted.py. In a folder
# of its own, outside the server's environment: CPU serving never imports Triton.
TRITON_INTERPRETER := $(VENV)/triton-interpreter
$(TRITON_INTERPRETER)/.installed: requirements/triton-interpreter.txt | $(VENV)/.installed
	rm -rf $(TRITON_INTERPRETER)
	$(PY) -m pip install -q --no-deps --target $(TRITON_INTERPRETER) -r requirements/triton-interpreter.txt
	touch $@

# The default engine: a small random-weight checkpoint in Qwen-7B-Chat's (v1) layout, converted by build/.
$(ENGINE)/engine_config.json: | $(VENV)/.installed
	$(PY) -m build.make_random_checkpoint --flavour qwen --seed 0 --out $(CHECKPOINT)
	$(PY) -m build.convert --hf-dir $(CHECKPOINT) --out $(ENGINE)

# An engine converted before engines carried Hugging Face tokenizer files gets them (GenAI-Perf's --tokenizer).
$(ENGINE)/tokenizer.json: $(ENGINE)/engine_config.json
	$(PY) -c 'import json, sys; from qwen_triton.text.hf_tokenizer import write_hf_tokenizer; \
	write_hf_tokenizer(sys.argv[1], max_input_len=json.load(open(sys.argv[1] + "/engine_config.json"))["limits"]["max_input_len"])' $(ENGINE)

engine: $(ENGINE)/engine_config.json $(ENGINE)/tokenizer.json

repo: engine
	$(PY) -m build.fill_templates --engine-dir $(ENGINE)

serve: repo
	$(PY) -m qwen_triton.serving.launcher --model-repository model_repository

test: venv $(TRITON_INTERPRETER)/.installed
	$(PY) -m pytest -q -ra

# Minutes of mixed load with cancellations and bad inputs; checks the server returns to idle (JSON result).
soak: engine
	$(PY) -m client.soak --engine $(ENGINE) --minutes $(SOAK_MINUTES) --out benchmarks/results/soak_cpu.json

# GenAI-Perf (requirements/dev.txt) in a venv of its own, so the server's pinned $(VENV) stays as it is; its
# perf_analyzer is $(VENV)'s wrapper (tools/perf_analyzer.sh). Run it as docs/tools.md says.
$(TOOLS_VENV)/.installed: requirements/dev.txt | $(VENV)/.installed
	test -x $(TOOLS_VENV)/bin/python || $(PYTHON) -m venv $(TOOLS_VENV)
	$(TOOLS_VENV)/bin/python -m pip install -q --upgrade pip
	$(TOOLS_VENV)/bin/python -m pip install -q -r requirements/dev.txt
	for b in perf_analyzer perf_client; do ln -sfn $(abspath $(VENV))/bin/$$b $(TOOLS_VENV)/bin/$$b; done
	touch $@

genai-perf: $(TOOLS_VENV)/.installed engine

clean:
	rm -rf $(VENV) $(TOOLS_VENV) engines checkpoints model_repository/*/config.pbtxt
