# Two set-up commands: `make serve` and `make test`. Both create the venv when missing.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
ENGINE ?= engines/qwen-tiny
CHECKPOINT ?= checkpoints/qwen-tiny
GRPC_PORT ?= 8001
HTTP_PORT ?= 8000
METRICS_PORT ?= 8002
export GRPC_PORT HTTP_PORT METRICS_PORT

SOAK_MINUTES ?= 10
BIND_ADDRESS ?= 127.0.0.1
export BIND_ADDRESS

.PHONY: venv engine repo serve test soak clean

$(VENV)/.installed: pyproject.toml requirements/cpu.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/cpu.txt
	$(PY) -m pip install -q --no-deps -e .
	touch $@

venv: $(VENV)/.installed

# The default engine: a small random-weight checkpoint in Qwen-7B-Chat's (v1) layout, converted by build/.
$(ENGINE)/engine_config.json: | $(VENV)/.installed
	$(PY) -m build.make_random_checkpoint --flavour qwen --seed 0 --out $(CHECKPOINT)
	$(PY) -m build.convert --hf-dir $(CHECKPOINT) --out $(ENGINE)

engine: $(ENGINE)/engine_config.json

repo: engine
	$(PY) -m build.fill_templates --engine-dir $(ENGINE)

serve: repo
	$(PY) -m qwen_triton.serving.launcher --model-repository model_repository

test: venv
	$(PY) -m pytest -q -ra

# Minutes of mixed load with cancellations and bad inputs; checks the server returns to idle (JSON result).
soak: engine
	$(PY) -m client.soak --engine $(ENGINE) --minutes $(SOAK_MINUTES) --out benchmarks/results/soak_cpu.json

clean:
	rm -rf $(VENV) engines checkpoints model_repository/*/config.pbtxt
