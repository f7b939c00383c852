# Two entry points: `make figures` (the default-scale run behind figures/) and `make test`.
# Both create the virtual environment and its Jupyter kernel on first use.

PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
KERNEL := melhubert
SCALE ?= default
WORK ?= work
# real corpora instead of the synthetic one (make figures LIBRISPEECH=/data/LibriSpeech VOXCELEB1=... SPEECH_COMMANDS=...)
LIBRISPEECH ?=
VOXCELEB1 ?=
SPEECH_COMMANDS ?=
CORPUS_FLAGS := $(if $(LIBRISPEECH),--librispeech $(LIBRISPEECH)) $(if $(VOXCELEB1),--voxceleb1 $(VOXCELEB1)) \
	$(if $(SPEECH_COMMANDS),--speech-commands $(SPEECH_COMMANDS))
# runs on other corpora keep their own stamps and outputs
CORPUS_TAG := $(if $(strip $(CORPUS_FLAGS)),-$(shell echo '$(CORPUS_FLAGS)' | sha1sum | cut -c1-8))
STAMP := $(WORK)/$(SCALE)/stamps$(CORPUS_TAG)
LIB := $(shell find melhubert_lib -name '*.py' 2>/dev/null)
# Only the default scale on the embedded corpus replaces the committed notebooks and figures/; any other run writes
# its executed notebooks and figures beside its stamps (override with NOTEBOOK_OUT=folder FIGURES=folder)
COMMITTED := $(and $(filter default,$(SCALE)),$(if $(CORPUS_TAG),,yes))
RUN_OUT := $(WORK)/$(SCALE)/outputs$(CORPUS_TAG)
FIGURES ?= $(if $(COMMITTED),figures,$(RUN_OUT)/figures)
NOTEBOOK_OUT ?= $(if $(COMMITTED),,$(RUN_OUT)/notebooks)

# The notebooks of the pipeline, in dependency order.
NOTEBOOKS := 00_data 01_baseline 02_head_pruning 03_weight_pruning 04_low_rank 05_distillation 06_downstream \
	07_tradeoffs 08_q1_ssl_loss 09_q2_universality 10_q3_task_aware 11_attention_heads 12_flash

.PHONY: all figures test lint env lock clean-work clean-figures
.DELETE_ON_ERROR:

all: figures

env: $(VENV)/.installed

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (melhubert)" >/dev/null
	touch $@

# Re-resolve the pins after editing requirements.in (writes requirements.lock and environment.yml).
lock: $(VENV)/.installed
	$(PY) -m pip install --quiet -r requirements.in
	$(PY) scripts/lock.py

# Each notebook runs headless with papermill into a temporary file that replaces the notebook
# only on success; a stamp records the success so make re-runs only what changed.
$(STAMP)/%.done: notebooks/%.ipynb $(LIB) $(VENV)/.installed
	@mkdir -p $(STAMP)
	$(PY) -m melhubert_lib run-notebook notebooks/$*.ipynb --scale $(SCALE) --work-dir $(WORK) \
		--figures-dir $(FIGURES) --kernel $(KERNEL) $(CORPUS_FLAGS) $(if $(NOTEBOOK_OUT),--output $(NOTEBOOK_OUT)/$*.ipynb)
	touch $@

$(STAMP)/01_baseline.done: $(STAMP)/00_data.done
COMPRESSION := 02_head_pruning 03_weight_pruning 04_low_rank 05_distillation
$(foreach nb,$(COMPRESSION) 06_downstream,$(STAMP)/$(nb).done): $(STAMP)/01_baseline.done
# the question notebooks read the compression results; 07 also the baseline's downstream rows, 09 what 07 wrote
$(STAMP)/07_tradeoffs.done: $(foreach nb,$(COMPRESSION) 06_downstream,$(STAMP)/$(nb).done)
$(STAMP)/08_q1_ssl_loss.done: $(foreach nb,$(COMPRESSION),$(STAMP)/$(nb).done)
$(STAMP)/09_q2_universality.done: $(STAMP)/07_tradeoffs.done
# 10 also judges 05's layer pruning (as 07 does) against its own task-ranked layer pruning: after 07, whose rows it
# reuses, never beside it (make -j: both write the downstream tables)
$(STAMP)/10_q3_task_aware.done: $(STAMP)/07_tradeoffs.done
$(STAMP)/11_attention_heads.done: $(STAMP)/02_head_pruning.done
# 12 writes the downstream tables too: after the other notebooks that write them, never beside one (make -j)
$(STAMP)/12_flash.done: $(STAMP)/07_tradeoffs.done $(STAMP)/10_q3_task_aware.done

figures: $(VENV)/.installed $(foreach nb,$(NOTEBOOKS),$(STAMP)/$(nb).done) $(FIGURES)/summary.md

# the results summary the README links: Markdown tables generated from results/, never typed by hand
$(FIGURES)/summary.md: $(foreach nb,$(NOTEBOOKS),$(STAMP)/$(nb).done)
	$(PY) -m melhubert_lib summary --scale $(SCALE) --work-dir $(WORK) \
		$(if $(LIBRISPEECH),--librispeech $(LIBRISPEECH)) --output $@

test: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q tests
	$(PY) -m melhubert_lib validate-notebooks $(foreach nb,$(NOTEBOOKS),notebooks/$(nb).ipynb) --kernel $(KERNEL)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

# Everything this scale computed (corpus, caches, targets, runs, results, stamps): the next `make figures` starts
# cold. Stages already recompute or refuse when what produced a stored result changed; this removes what is left.
clean-work:
	rm -rf $(WORK)/$(SCALE)

# The figures and the data tables beside them (`make figures` draws them again from the results).
clean-figures:
	rm -f $(FIGURES)/*.png $(FIGURES)/*.pdf $(FIGURES)/data/*.csv $(FIGURES)/summary.md
