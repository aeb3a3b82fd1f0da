# dynlen: every target runs inside .venv (made by `make install`).
PY      ?= .venv/bin/python
# The two models this project builds itself (bench/model_io.py names the same folders). Only these
# are built on demand; any other MODEL (a hub id, your own folder) is loaded exactly as given.
DEFAULT_MODEL  ?= models/minilm-squad-lengthdrop
STANDARD_MODEL ?= models/minilm-squad
MODEL   ?= $(DEFAULT_MODEL)
STANDARD ?= $(STANDARD_MODEL)
# DATA and TRAIN default to the paths in bench/squad.py (DEFAULT_DEV_SET) and training/recipe.py
DATA    ?=
TRAIN   ?=
CONFIG  ?= keep-all
LIMIT   ?=
OUT     ?= runs/eval
RUN     ?= default
TRIALS  ?= 100
BUDGET  ?=
COST    ?= flops
SAMPLER ?= tpe
QUICK   ?=

ifeq ($(QUICK),1)
  TRIALS := 12
  SEARCH_SIZE := --search-questions 150 --heldout-questions 300 --latency-sample 4 --latency-repeats 2 --max-rescore 4
  RUN := $(if $(filter default,$(RUN)),quick,$(RUN))
endif

.PHONY: install test model model-standard train eval pareto report choose regress regress-update bench-eval bench-overhead bench-kernel bench-fidelity bench-samplers bench-lengthdrop bench-survival help

help:
	@echo "make install | test | model | model-standard | train | eval | pareto | report | choose | regress | bench-eval | bench-overhead | bench-kernel | bench-fidelity | bench-samplers | bench-lengthdrop | bench-survival"

# TORCH= (empty): pip's own torch for this machine, e.g. the CUDA build from PyPI on Linux.
# TORCH=cpu: the CPU build from PyTorch's CPU index, and a check that no CUDA packages came with it (CI).
TORCH ?=
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

install:
	python3 -m venv .venv
ifeq ($(TORCH),cpu)
	.venv/bin/pip install --quiet 'torch==$(TORCH_VERSION)+cpu' --extra-index-url $(TORCH_CPU_INDEX)
else
	.venv/bin/pip install --quiet 'torch==$(TORCH_VERSION)'
endif
	.venv/bin/pip install --quiet -e '.[dev]'
ifeq ($(TORCH),cpu)
	@if .venv/bin/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "error: CUDA packages were installed (TORCH=cpu)"; exit 1; fi
endif
	@.venv/bin/python -c "import torch, transformers, optuna; print('torch', torch.__version__, '(CUDA ' + str(torch.version.cuda) + ')' if torch.version.cuda else '(CPU build)', '| transformers', transformers.__version__, '| optuna', optuna.__version__)"

test:
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

# The default model is LengthDrop-trained (MODEL); it starts from the standard fine-tuned one
# (STANDARD), which stays for comparison. Both steps are idempotent and resumable.
model: model-standard train

model-standard:
	$(PY) -m training finetune --out $(STANDARD) $(if $(TRAIN),--train $(TRAIN),)

train:
	$(PY) -m training lengthdrop --model $(STANDARD) --out $(MODEL) $(if $(TRAIN),--train $(TRAIN),)

eval:
	$(PY) -m bench eval --model $(MODEL) $(if $(DATA),--data $(DATA),) --config '$(CONFIG)' --out $(OUT) $(if $(LIMIT),--limit $(LIMIT),)

# Decided when the Makefile is read, not by a shell test: a hub id such as org/name must never be
# taken for a missing folder and trained into, and `make -n` shows exactly what will run.
BUILDABLE := $(DEFAULT_MODEL) $(STANDARD_MODEL)
BUILD_ON_DEMAND := $(if $(filter $(patsubst %/,%,$(MODEL)),$(BUILDABLE)),$(patsubst %/,%,$(MODEL))/config.json,)

$(DEFAULT_MODEL)/config.json:
	$(MAKE) model MODEL=$(DEFAULT_MODEL) STANDARD=$(STANDARD_MODEL)

$(STANDARD_MODEL)/config.json:
	$(MAKE) model-standard STANDARD=$(STANDARD_MODEL)

pareto: $(BUILD_ON_DEMAND)
	$(PY) -m search run --model $(MODEL) $(if $(DATA),--data $(DATA),) --run-dir reports/$(RUN) --trials $(TRIALS) \
		--cost $(COST) --sampler $(SAMPLER) $(if $(BUDGET),--budget '$(BUDGET)',) $(SEARCH_SIZE)

report:
	$(PY) -m reports reports/$(RUN)

choose:
	$(PY) -m search choose --run reports/$(RUN) $(if $(BUDGET),--budget '$(BUDGET)',)

regress:
	$(PY) -m bench regress check

regress-update:
	$(PY) -m bench regress update --from reports/reference/frontier.csv

bench-eval:
	$(PY) benchmarks/evaluator_throughput.py --model $(MODEL) $(if $(DATA),--data $(DATA),)

bench-overhead:
	$(PY) benchmarks/keep_all_overhead.py --model $(MODEL) $(if $(DATA),--data $(DATA),)

bench-kernel:
	$(PY) benchmarks/small_gemm_throughput.py

bench-fidelity:
	$(PY) benchmarks/flops_fidelity.py --model $(MODEL) $(if $(DATA),--data $(DATA),) --threads 2,1 --frontier reports/reference/frontier.csv

bench-samplers:
	$(PY) benchmarks/sampler_comparison.py --model $(MODEL) $(if $(DATA),--data $(DATA),)

# Standard fine-tuning vs LengthDrop: the same search on both models, compared on held-out.
bench-lengthdrop:
	$(MAKE) pareto MODEL=$(STANDARD) RUN=reference-standard
	$(MAKE) pareto MODEL=$(MODEL) RUN=reference
	$(PY) -m reports.compare standard=reports/reference-standard lengthdrop=reports/reference \
		--out reports/lengthdrop-vs-standard

# Do the gold answers' tokens survive dropping, and how well are they scored when they do not?
bench-survival:
	$(PY) benchmarks/answer_survival.py --models $(STANDARD),$(MODEL) $(if $(DATA),--data $(DATA),) --features 250 \
		--out reports/lengthdrop-vs-standard/answer-survival.json
