# Two commands do everything: `make repro` (the offline run: Table I in results/) and
# `make test` (what CI runs). Both create the environment first. See README.md.
# `make repro ARGS=-f` reruns every stage (ARGS go to each `dvc repro`); `make repro DATASETS=name`
# runs only that dataset of params/run.yaml, then the analysis.
SHELL := /bin/bash
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Notebooks run quietly under test: no model-loading bars or log lines in the compared outputs
# (the kit's own bars are notebook widgets, whose stored text is stable).
QUIET := TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 TRANSFORMERS_VERBOSITY=error

.PHONY: env data repro test notebook-outputs clean-smoke

env: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV)
	touch $(STAMP)

data:
	bash scripts/install_data.sh

repro: env data
	@# A copy without .git (a Kaggle input, an unpacked archive): DVC needs to be told there is no git.
	@[ -d .git ] || $(BIN)/dvc config --local core.no_scm true
	PATH="$(CURDIR)/$(BIN):$$PATH" DVC=$(BIN)/dvc PYTHON=$(BIN)/python DATASETS="$(DATASETS)" bash scripts/repro.sh $(ARGS)
	@echo "Table I: results/table1.md   figure: results/figures/accuracy_vs_shots.png"

test: env data
	$(QUIET) $(BIN)/python -m pytest

# After a deliberate change of a notebook or of what it shows: re-run notebooks/ under the
# smoke overlay so the outputs nbval compares against are current.
notebook-outputs: env data clean-smoke
	for nb in notebooks/0*.ipynb; do \
	  $(QUIET) $(BIN)/jupyter nbconvert --to notebook --execute --inplace $$nb && $(BIN)/python -m kit_tools.tidy $$nb || exit 1; done

clean-smoke:
	rm -rf build/smoke
