# GSM8K QLoRA toolkit. `make help` lists targets and variables.
# Targets are files: a stage reruns only when its script, the lib/ code it uses, the config
# keys it reads (artifacts/run_<run>/params/<stage>.json) or its upstream artifacts change.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3## interpreter that creates .venv (Python 3.11)
PRESET ?= demo## preset name: presets/$(PRESET).yaml (demo, simple, medium, strong); an existing RUN remembers its own
RUN ?= $(PRESET)## run name; outputs go to $(ARTIFACTS)/run_$(RUN)/
SET ?=## config overrides, e.g. SET="train.epochs=2 fewshot.k=5" (added to the run's recorded ones)
SMOKE ?=## 1: use the preset's smoke sizes (train/eval limits); 0: not; empty: as the run recorded
RECONFIGURE ?=## 1: accept settings that differ from the run's recorded ones (replaced work moves to superseded/)
ARTIFACTS ?= artifacts## artifact root (also read by the stages as ARTIFACTS_DIR)
NPROC ?= $(GPUS_OR_1)## processes for train/infer stages (default: the visible GPUs, 1 without); >1 runs `accelerate launch --num_processes NPROC`
LAUNCH_CONFIG ?=## accelerate config for several processes, e.g. presets/accelerate/deepspeed_zero2.yaml (NPROC still sets the count)
TRAIN_ARGS ?=## extra options for stages.train, e.g. TRAIN_ARGS="--stop-after 100"

VENV ?= .venv
VENV_ARGS ?=## options for `python -m venv` (given, make venv uses pip), e.g. VENV_ARGS=--system-site-packages
INSTALLER ?= auto## what make venv installs with: auto (uv when on PATH or installable from the registry, else pip), uv or pip
IMAGE ?= gsm8k-qlora-toolkit## docker image name for docker-build / docker
T ?= help## the Make target `make docker` runs inside the image
HF_CACHE ?= $(HOME)/.cache/huggingface## host folder mounted as the image's HF cache
PY := $(VENV)/bin/python
VENV_STAMP := $(VENV)/.installed
export ARTIFACTS_DIR := $(ARTIFACTS)

# What the user typed, read as typed and checked before Make reads any rule that uses it.
# $(value X) is the text itself (Make would take the `$b` of RUN='a$b' for a variable and drop it).
typed = $(if $(filter command line environment override,$(origin $(1))),$(value $(1)),$($(1)))
quote = '$(subst ','\'',$(1))'# one shell word, whatever the text holds
comma := ,
# A name (RUN, PRESET) becomes file and target names: a ':' would split a rule, a space make two.
check_name = $(if $(shell printf '%s' $(call quote,$(call typed,$(1))) | grep -xqE '[A-Za-z0-9][A-Za-z0-9._-]*' \
	&& echo ok),,$(error $(1)=$(call typed,$(1)): a name of letters, digits, '-', '_' and '.', starting with a letter or digit (e.g. $(1)=my-run)))
$(call check_name,RUN)
$(call check_name,PRESET)
# Booleans: 1, true, yes, on or 0, false, no, off (any case); empty when not given; anything else stops here.
TRUE_WORDS := 1 true True TRUE yes Yes YES on On ON
FALSE_WORDS := 0 false False FALSE no No NO off Off OFF
boolean = $(strip $(if $(filter $(TRUE_WORDS),$(value $(1))),1,$(if $(filter $(FALSE_WORDS),$(value $(1))),0,\
	$(if $(strip $(value $(1))),$(error $(1)=$(value $(1)): expected 1$(comma) true$(comma) yes or on$(comma) or 0$(comma) false$(comma) no or off))))\
	$(if $(word 2,$(value $(1))),$(error $(1)=$(value $(1)): one word, e.g. $(1)=1)))
SMOKE_ON := $(call boolean,SMOKE)
RECONFIGURE_ON := $(call boolean,RECONFIGURE)
ifneq ($(words $(filter auto uv pip,$(INSTALLER))) $(words $(INSTALLER)),1 1)
$(error INSTALLER=$(INSTALLER): one of auto, uv or pip (e.g. INSTALLER=pip))
endif
ifneq ($(filter command line environment,$(origin NPROC)),)
ifneq ($(shell printf '%s' $(call quote,$(value NPROC)) | grep -xqE '[1-9][0-9]*' && echo ok),ok)
$(error NPROC=$(value NPROC): the number of processes, a whole number from 1 (e.g. NPROC=4))
endif
endif
RUN_DIR := $(ARTIFACTS)/run_$(RUN)
# A dry run (make -n, also in sub-makes) plans from what recording would write, kept apart: it
# records nothing of the run (RECONFIGURE=1 with -n changes nothing).
# Its folder is this call's (Make keeps its process when it restarts after remaking a makefile, so a
# second pass finds what the first wrote), handed to the sweep's sub-makes.
DRY_RUN := $(findstring n,$(firstword -$(MAKEFLAGS)))
ifneq ($(DRY_RUN),)
export DRY_RUN_FOLDER ?= .make/dry-run/$(shell echo $$PPID)
endif
PARAMS := $(if $(DRY_RUN),$(DRY_RUN_FOLDER)/$(subst /,_,$(abspath $(RUN_DIR)))/params,$(RUN_DIR)/params)

# A run remembers its preset, overrides and smoke flag (run_<run>/run.json): `make score_safety RUN=medium`
# names no preset and uses the recorded one. The preset is passed only when named, or when neither it
# nor RUN is (the demo default).
PRESET_NAMED := $(if $(filter file,$(origin PRESET)),$(filter file,$(origin RUN)),yes)
RUN_ARGS := --run $(RUN) $(if $(PRESET_NAMED),--preset presets/$(PRESET).yaml) \
	$(if $(filter 0,$(SMOKE_ON)),--no-smoke,$(if $(SMOKE_ON),--smoke)) $(if $(filter 1,$(RECONFIGURE_ON)),--reconfigure)
# SET reaches the stages whole, as typed, through the environment (lib/pipeline/presets.py splits it by
# shell quoting rules): neither Make nor a recipe's shell reads any part of it. EXTRA_SET: `make base`'s own.
export MAKE_SET := $(call typed,SET)$(if $(call typed,EXTRA_SET), $(call typed,EXTRA_SET))

# The stages, generated from the stage graph (lib/pipeline/stage_graph.py, the one declaration of every
# stage: its target, what it reads of other stages, its command, `make help`'s line) by
# lib/pipeline/stage_inputs.py (system Python, standard library only), regenerated whenever code
# changes: STAGE_GOALS and LIB_<STAGE> (the lib/ modules each stage imports, its prerequisites besides
# its script) here; the rules below, once the run's make.mk has said what they depend on.
STAGE_VARS_MK := .make/stage_vars.mk
STAGE_INPUTS_MK := .make/stage_rules.mk
CODE := lib $(wildcard lib/*/) stages $(wildcard lib/*.py lib/*/*.py stages/*.py)  # the folders: a deleted module counts
ifneq ($(wildcard lib/pipeline/stage_inputs.py),)
$(STAGE_VARS_MK) $(STAGE_INPUTS_MK): .make/stage_%.mk: $(CODE)
	@mkdir -p $(@D) && $(PYTHON) -m lib.pipeline.stage_inputs make-$* > $@.$$$$.tmp && mv $@.$$$$.tmp $@
-include $(STAGE_VARS_MK)
endif

# The GPUs this machine lets a process see: CUDA_VISIBLE_DEVICES' entries where it is set, else
# nvidia-smi's list (0 without either). NPROC defaults to them, so no launch assumes another machine's count.
# Counted on first use (then kept), so only when a stage's launch line needs the default NPROC, not
# at every make and sub-make start.
VISIBLE_GPUS = $(eval VISIBLE_GPUS := $(shell if [ -n "$${CUDA_VISIBLE_DEVICES+set}" ]; then printf '%s' "$$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c '[0-9a-zA-Z]'; \
	else nvidia-smi -L 2>/dev/null | grep -c '^GPU'; fi))$(VISIBLE_GPUS)
GPUS_OR_1 = $(or $(filter-out 0,$(VISIBLE_GPUS)),1)
# One process runs a stage directly; several go through accelerate (DDP for training, a shard of
# the prompts each for inference; gloo on CPU, NCCL on GPUs). A LAUNCH_CONFIG file sets the rest of
# the launch (DeepSpeed, several machines); the process count always comes from NPROC.
ACCELERATE = $(VENV)/bin/accelerate launch --num_processes $(NPROC)
LAUNCH = $(if $(LAUNCH_CONFIG),$(ACCELERATE) --config_file $(LAUNCH_CONFIG) -m,$(if $(filter-out 1,$(NPROC)),$(ACCELERATE) --multi_gpu --num_machines 1 --mixed_precision no --dynamo_backend no -m,$(PY) -m))

.PHONY: check config-docs help venv test test-slow bench demo simple medium strong smoke base compare $(STAGE_GOALS) sweep docker-build docker lint lint-docker clean-run push download gpu-check wheelhouse gpu-check-rehearsal

help: ## list targets and variables
	@echo "Targets:"
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(firstword $(MAKEFILE_LIST)) $(wildcard $(STAGE_INPUTS_MK)) | awk -F':.*## ' '{printf "  %-18s %s\n", $$1, $$2}'
	@echo "Variables (make TARGET VAR=value):"
	@grep -E '^[A-Z_]+ \?=.*## ' $(firstword $(MAKEFILE_LIST)) | sed -E 's/^([A-Z_]+) \?= ?([^#]*)## (.*)/  \1=\2|\3/' \
		| awk -F'|' '{printf "  %-24s %s\n", $$1, $$2}'

venv: $(VENV_STAMP) ## create .venv with the pinned requirements (redone when they change)

# VENV_READY=1 (set by the Docker image, which built its venv with the image's CUDA torch): the venv is
# never redone, by this make or any sub-make, however new the mounted requirements files are.
ifeq ($(VENV_READY),1)
$(VENV_STAMP): ;
else
# The stamp says which requirements the venv holds: it is redone when they change, not when the way
# of installing them does.
$(VENV_STAMP): requirements.txt requirements-nodeps.txt
	$(PYTHON) -m stages.setup_venv --venv $(call quote,$(VENV)) --installer $(call quote,$(INSTALLER)) \
		--venv-args $(call quote,$(call typed,VENV_ARGS))
	touch $@
endif

# Two workers for two cores; a test file stays on one worker (its module fixtures run once).
test: $(VENV_STAMP) lint lint-docker ## run the linters, then the test suite (CPU, offline; GPU tests skip without CUDA)
	$(PY) -m pytest -n 2 --dist loadfile -m "not slow"

test-slow: $(VENV_STAMP) ## the slow end-to-end tests: kills and reruns, several processes, base run + compare (CI runs them too)
	$(PY) -m pytest -n 2 --dist loadfile -m slow

bench: $(VENV_STAMP) ## run the benchmarks in tests/bench/ and print their figures
	@set -e; shopt -s nullglob; benches=(tests/bench/bench_*.py); \
	if [ $${#benches[@]} -eq 0 ]; then echo "no benchmarks yet"; fi; \
	for bench in "$${benches[@]}"; do echo "== $$bench"; $(PY) "$$bench"; done

demo: ## the embedded default end to end on CPU, offline
	$(MAKE) summarize PRESET=demo RUN=demo

simple: ## every stage of presets/simple.yaml in order, as run "simple"
	$(MAKE) summarize PRESET=simple RUN=simple
medium: ## every stage of presets/medium.yaml in order, as run "medium"
	$(MAKE) summarize PRESET=medium RUN=medium
strong: ## every stage of presets/strong.yaml in order (the refined training file first, when absent), as run "strong"
	$(MAKE) summarize PRESET=strong RUN=strong

smoke: ## the PRESET's chain at smoke sizes, as run <preset>-smoke (e.g. make smoke PRESET=simple)
	$(MAKE) summarize PRESET=$(PRESET) RUN=$(PRESET)-smoke SMOKE=1

base: ## the PRESET's base model evaluated as run <preset>-base, no training (SMOKE=1: run <preset>-smoke-base)
	$(MAKE) summarize PRESET=$(PRESET) RUN=$(PRESET)$(if $(filter 1,$(SMOKE_ON)),-smoke)-base EXTRA_SET="eval.adapter=none sweep.enabled=false"

RUNS ?=## runs for `make compare`, the reference first: RUNS="simple-base simple strong"
COMPARE_NAME ?=## output name for `make compare` (default: the runs joined by _vs_)
check: $(VENV_STAMP) ## the preflight alone: every input PRESET's (or RUN's) remaining stages need, all problems at once
	$(PY) -m stages.check $(RUN_ARGS)

compare: stages/compare.py $(LIB_COMPARE) $(VENV_STAMP) ## paired differences of RUNS against the first -> compare_<name>.md/.csv/.json/.png
	$(PY) -m stages.compare $(foreach r,$(RUNS),--runs $(r)) $(if $(COMPARE_NAME),--name $(COMPARE_NAME))

REPO ?=## Hub model repository for `make push`, e.g. REPO=you/qwen3-4b-gsm8k-qlora
PUBLIC ?=## PUBLIC=1: `make push` creates the repository public (default: private)
push: $(VENV_STAMP) ## upload RUN's adapter with its model card to the Hub: make push RUN=simple REPO=you/name [PUBLIC=1]
	$(PY) -m stages.push --run $(RUN) --repo $(call quote,$(call typed,REPO)) $(if $(filter 1,$(call boolean,PUBLIC)),--public)

# Before Make plans anything, each call with a chain target records the run (run.json, params/<stage>.json
# and params/make.mk, each rewritten only when its content changes, so their mtimes tell Make which keys
# changed) and runs the preflight (every input the goals' remaining stages read, all problems at once,
# before any stage works). params/make.mk is an included makefile remade at every call (FORCE), and Make
# remakes included makefiles even under -n, so `make -n` prints the real plan: from what this call would
# record, written under .make/dry-run/ with nothing of the run changed (DRY_RUN). make.mk gives Make REFINED_TRAIN
# (the run's data.refined_train, empty when it names none), BASE_RUN (1 when eval.adapter is none) and
# SWEEP (1 when sweep.enabled). A restart (after a makefile was remade) records again: nothing changes.
CHAIN_GOALS := $(filter $(STAGE_GOALS) sweep,$(MAKECMDGOALS))
ifneq ($(CHAIN_GOALS),)
include $(PARAMS)/make.mk
$(PARAMS)/make.mk: FORCE | $(VENV_STAMP)
	@$(PY) -m stages.check --record $(RUN_ARGS) $(foreach g,$(CHAIN_GOALS),--goal $(g)) $(if $(DRY_RUN),--dry-run-params $(@D))
else
-include $(PARAMS)/make.mk
endif
.PHONY: FORCE
$(PARAMS)/%.json: ;
# One stage at a time: the stages of a run share its GPU and its lock (lib/pipeline/lock.py).
.NOTPARALLEL:

# tokenize waits for the refined file; refine builds it when absent and never replaces one you
# provide (order-only: a code or config change does not redo hours of sampling; `make refine` does).
ifneq ($(REFINED_TRAIN),)
$(RUN_DIR)/train_tokenized.jsonl: $(REFINED_TRAIN)
$(REFINED_TRAIN): | $(RUN_DIR)/fewshot.jsonl
	$(LAUNCH) stages.refine $(RUN_ARGS)
endif

# What evaluations wait for: the finished adapter, or nothing in a base run (eval.adapter: none).
ADAPTER := $(if $(BASE_RUN),,$(RUN_DIR)/adapter/training_complete.json)
ifneq ($(wildcard lib/pipeline/stage_inputs.py),)
-include $(STAGE_INPUTS_MK)
endif

# The sweep (presets with sweep.enabled): the final adapter is evaluated as the run itself; the
# sweep adds the checkpoints before it, each through the evaluation stages' per-checkpoint rules
# (generated), each through its own sub-make (a failure stops the loop and reaches Make's exit
# code); a run that does not sweep has no recipe here, so a dry run prints none. summarize waits for
# it order-only: only changed evaluations (through the adapter) rerun summarize.
SWEEP_EACH = checkpoints=$$($(PY) -m stages.sweep $(RUN_ARGS)) || exit 1; for checkpoint in $$checkpoints; do \
	$(MAKE) --no-print-directory $(ARTIFACTS)/gsm8k_preds_$(RUN)_$$checkpoint.jsonl \
		$(ARTIFACTS)/ailuminate_safety_$(RUN)_$$checkpoint.jsonl || exit 1; done
sweep: $(if $(SWEEP),$(ADAPTER)) ## evaluate the latest checkpoints (presets with sweep.enabled, training first; nothing otherwise)
	$(if $(SWEEP),@$(SWEEP_EACH))

# The container: the repo, data/ and artifacts/ mounted at the same places, the GPUs, and HF_TOKEN
# passed by name from the environment (its value never appears on a command line or in a layer).
# It runs as the calling user (files it writes are yours, whatever your uid), with a writable HOME;
# the mounted folders are created first, or Docker would create them as root.
# The image built its venv already and says so (VENV_READY=1 in its environment, seen by every sub-make).
DOCKER_RUN := docker run --rm --gpus all --ipc=host --user "$$(id -u):$$(id -g)" -e HOME=/tmp \
	-e HF_TOKEN -e ARTIFACTS_DIR=artifacts \
	-v "$(CURDIR)":/workspace -v "$(CURDIR)/data":/workspace/data -v "$(abspath $(ARTIFACTS))":/workspace/artifacts \
	-v "$(HF_CACHE)":/cache/huggingface $(IMAGE)

# The variables a user named on this command line, passed on unchanged (a run remembers the rest).
DOCKER_VARS := $(if $(filter-out file,$(origin PRESET)),PRESET=$(PRESET)) $(if $(filter-out file,$(origin RUN)),RUN=$(RUN)) \
	$(if $(call typed,SET),SET=$(call quote,$(call typed,SET))) $(if $(SMOKE_ON),SMOKE=$(SMOKE_ON)) \
	$(if $(RECONFIGURE_ON),RECONFIGURE=$(RECONFIGURE_ON)) $(if $(filter-out file,$(origin NPROC)),NPROC=$(NPROC))

DOCKER_BUILD_ARGS ?=## extra `docker build` options, e.g. "--build-arg BASE_IMAGE=pytorch/pytorch:<tag>"
docker-build: ## build the CUDA image (docker/Dockerfile)
	docker build -f docker/Dockerfile -t $(IMAGE) $(if $(DOCKER_BUILD_ARGS),$(DOCKER_BUILD_ARGS) ).

docker: ## run a Make target inside the image: make docker T=strong (or T="smoke PRESET=simple")
	mkdir -p "$(abspath $(ARTIFACTS))" "$(HF_CACHE)"
	$(DOCKER_RUN) make $(strip $(T) $(DOCKER_VARS))

CARD ?= h100## the card gpu-check and bench_gpu.py print datasheet peaks for (h100, h200, a100)
GPU_CHECK := $(or $(OUT),$(ARTIFACTS)/gpu_check)
BUNDLE ?= gpu-bundle## what `make wheelhouse` writes: wheels/ and the GPU check's tiny models/
# The GPU node's image (not IMAGE, which names the Docker image): what its own Python holds.
NODE_IMAGE ?= docker/images/h200-cuda13.txt## the GPU node's Python packages, for `make wheelhouse`
NODE_PYTHON ?= 3.12## the GPU node's Python version, for `make wheelhouse`
CUDA ?= 13.0## the GPU node's CUDA version: the bitsandbytes library `make wheelhouse` keeps
gpu-check: $(VENV_STAMP) ## on a GPU with the venv: parts 1 and 2 of the check (stages/gpu_check.py), logs and gpu_check.md in OUT or artifacts/gpu_check
	$(PY) -m stages.gpu_check part1 --no-install --out $(GPU_CHECK) --card $(CARD) --bundle $(BUNDLE)
	$(PY) -m stages.gpu_check part2 --no-install --out $(GPU_CHECK) --card $(CARD) --bundle $(BUNDLE)

wheelhouse: $(VENV_STAMP) ## wheels and the check's models for an offline GPU node whose image has torch -> BUNDLE
	$(PY) -m stages.wheelhouse --image $(NODE_IMAGE) --cuda $(CUDA) --python $(NODE_PYTHON) --out $(BUNDLE)

# The node rehearsed here: a Python NODE_PYTHON venv with NODE_IMAGE's versions (its CUDA torch too, GBs;
# kept in REHEARSAL between calls) standing for the image's python3, every module imported, then each
# part as docs/machines.md gives it, at tiny size on the CPU, in a shell of its own with no site and
# no model left by the other (as on a fresh machine), and the real check's one-line stop without CUDA.
REHEARSAL ?= /tmp/gsm8k-rehearsal## where gpu-check-rehearsal keeps its image-like venv
REHEARSAL_PYTHON ?=## the Python NODE_PYTHON gpu-check-rehearsal builds its venv with (default: the first found that runs)
# The first candidate that runs and is Python NODE_PYTHON: a pyenv shim of another version is on the
# PATH and exits 127 when run.
NODE_PYTHON_FOUND = $(firstword $(foreach p,python$(NODE_PYTHON) $(wildcard $(HOME)/.pyenv/versions/$(NODE_PYTHON)*/bin/python$(NODE_PYTHON) /usr/bin/python$(NODE_PYTHON) /usr/local/bin/python$(NODE_PYTHON)),\
	$(shell "$(p)" -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(NODE_PYTHON))))' >/dev/null 2>&1 && echo "$(p)")))
comma := ,
REHEARSAL_IMAGE := $(REHEARSAL)/image
NODE_SHELL = env -u PYTHONPATH PATH="$(REHEARSAL_IMAGE)/bin:$$PATH" OUT=$(REHEARSAL)/out bash -c
gpu-check-rehearsal: wheelhouse ## without a GPU: the bundle installed by each part into an image-like venv, the check at tiny size
	@python="$(or $(REHEARSAL_PYTHON),$(NODE_PYTHON_FOUND))"; test -n "$$python" && "$$python" -c 'import sys; sys.exit(sys.version_info[:2] != ($(subst .,$(comma),$(NODE_PYTHON))))' 2>/dev/null \
		|| { echo "Error: no Python $(NODE_PYTHON) that runs found$(if $(REHEARSAL_PYTHON), ($(REHEARSAL_PYTHON) is not one)); set REHEARSAL_PYTHON=/path/to/python$(NODE_PYTHON)" >&2; exit 1; }; \
		echo "rehearsal: Python $(NODE_PYTHON) is $$python"; test -x $(REHEARSAL_IMAGE)/bin/python || "$$python" -m venv $(REHEARSAL_IMAGE)
	grep -v '^#' $(NODE_IMAGE) | $(REHEARSAL_IMAGE)/bin/python -m pip install --quiet -r /dev/stdin
	rm -rf $(REHEARSAL)/out $(REHEARSAL)/work $(REHEARSAL)/site
	$(NODE_SHELL) 'python3 -m stages.gpu_check part1 --out $$OUT --card h200 --tiny --site $(REHEARSAL)/site --work $(REHEARSAL)/work --bundle $(BUNDLE)'
	PYTHONPATH=$(REHEARSAL)/site:$(CURDIR) $(REHEARSAL_IMAGE)/bin/python -c "import importlib, pathlib; [importlib.import_module('.'.join(p.with_suffix('').parts).removesuffix('.__init__')) \
		for d in ('lib', 'stages') for p in sorted(pathlib.Path(d).rglob('*.py'))]; print('rehearsal: every module of lib/ and stages/ imports')"
	rm -rf $(REHEARSAL)/work $(REHEARSAL)/site  # part 2 on a fresh machine: nothing installed, no model
	$(NODE_SHELL) 'python3 -m stages.gpu_check part2 --out $$OUT --card h200 --tiny --site $(REHEARSAL)/site --work $(REHEARSAL)/work --bundle $(BUNDLE)'
	! $(NODE_SHELL) 'python3 -m stages.gpu_check part1 --out $$OUT-cuda --site $(REHEARSAL)/site --bundle $(BUNDLE)' 2> $(REHEARSAL)/no-cuda.txt
	test "$$(grep -c . $(REHEARSAL)/no-cuda.txt)" = 1 && grep '^Error: gpu-check needs CUDA' $(REHEARSAL)/no-cuda.txt

download: $(VENV_STAMP) ## fetch what PRESET needs from the hub into the HF cache (a login node) and check data/; then run offline
	$(PY) -m stages.download --preset presets/$(PRESET).yaml

config-docs: $(VENV_STAMP) ## regenerate docs/config.md, the table of every config key, from lib/pipeline/config.py
	$(PY) -m stages.config_docs

lint: $(VENV_STAMP) ## ruff on the Python code (rules in pyproject.toml; run by make test)
	$(VENV)/bin/ruff check .

lint-docker: $(VENV_STAMP) ## hadolint on docker/Dockerfile (run by make test)
	$(VENV)/bin/hadolint docker/Dockerfile

clean-run: $(VENV_STAMP) ## delete one run's folder and evaluation files (RUN=name, never guessed; the only command that deletes work)
	@$(if $(filter command line environment,$(origin RUN)),,echo "Error: clean-run deletes one run's work and never guesses which: name it, e.g. make clean-run RUN=demo-smoke" >&2; exit 1)
	$(PY) -m stages.clean_run --run $(RUN)
