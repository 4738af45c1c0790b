# The course's commands. `make lab` to learn, `make test` to check everything (what CI runs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
KERNEL := diamond-lite
NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))

.PHONY: setup lab test test-browser notebooks pretrain train clean
PROFILE ?= course
# Notebooks 00-06 and their pretrained models use Breakout; the full run's default game is Krull, chosen by
# measurement (docs/results.md, Krull; diamond_lite.COURSE_RUN_GAME, which a test compares).
PRETRAIN_GAME := $(or $(GAME),Breakout)
RUN_GAME := $(or $(GAME),Krull)
OUT ?= runs/$(RUN_GAME)-$(PROFILE)

setup: $(STAMP)

# Re-installs whenever pyproject.toml changes (the stamp's name carries its checksum).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) --display-name "Python (diamond-lite)" >/dev/null
	rm -f $(VENV)/.installed-*
	touch $@

lab: setup
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root)

# Unit tests, then every notebook under nbval in the smoke profile. Lax mode: a cell fails only by
# raising, since outputs (timings, tqdm on stderr) legitimately differ from the committed ones.
# TEST_WORKERS processes (pytest-xdist) share the tests, one torch thread each: two threads per process on two
# cores would stall each other (docs/performance.md, "The test suite"). --dist loadscope hands out whole test modules and whole
# notebooks (nbval's cells must run in order in one kernel).
TEST_WORKERS ?= 2
test: setup
	DIAMOND_PROFILE=smoke OMP_NUM_THREADS=1 $(PY) -m pytest tests notebooks --nbval-lax -p no:cacheprovider \
		-n $(TEST_WORKERS) --dist loadscope $(PYTEST_ARGS)

# The player widget in a real browser: headless Chromium drives JupyterLab on localhost, clicks an action and sees the
# frame change. Needs Debian's chromium and chromium-driver (README); CI runs it after `make test`.
test-browser: setup
	$(PY) -m pytest browser_tests -p no:cacheprovider $(PYTEST_ARGS)

# Re-executes every notebook in the course profile and saves its outputs (what GitHub shows).
notebooks: setup
	$(PY) -m diamond_lite.run_notebooks --profile course $(NOTEBOOKS)

# Trains the course-profile models for GAME (default Breakout) into data/checkpoints/, each for a number of updates
# (about 30 minutes each on a 2-core laptop CPU with bf16 instructions; docs/results.md): DIAMOND's EDM world model
# (2,500 updates of its two loss terms), the same model without its autoregressive term for as much compute (5,000
# updates of one term: notebook 02's comparison), the reward/termination model for 60 minutes, then the DDPM baseline
# of notebook 04 for the EDM model's number of updates on the same data.
pretrain: setup
	$(PY) -m diamond_lite.pretrain --game $(PRETRAIN_GAME) --profile course --max-steps 2500 --minutes 300
	$(PY) -m diamond_lite.pretrain --game $(PRETRAIN_GAME) --profile course --max-steps 5000 --minutes 300 \
		--autoregressive-steps 0 --out data/checkpoints/$(PRETRAIN_GAME)_world_model_one_term_course.pt
	$(PY) -m diamond_lite.pretrain --game $(PRETRAIN_GAME) --profile course --kind rew_end_model --minutes 60
	$(PY) -m diamond_lite.pretrain --game $(PRETRAIN_GAME) --profile course --kind ddpm_world_model --minutes 300 \
		--max-steps $$($(PY) -c "import json; print(json.load(open('data/checkpoints/$(PRETRAIN_GAME)_world_model_course.json'))['updates'])")

# A full DIAMOND run (python -m diamond_lite.train): `make train` (Krull, course) or `make train GAME=Pong PROFILE=paper`. Continues the run in OUT
# if there is one (after a crash or a kill), else starts it. Extra options: ARGS="--set seed=1 --device cuda".
train: setup
	if [ -f $(OUT)/config.json ]; then $(PY) -m diamond_lite.train --resume $(OUT) $(ARGS); \
	else $(PY) -m diamond_lite.train --game $(RUN_GAME) --profile $(PROFILE) --out $(OUT) $(ARGS); fi

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
