# MoodLake. `make demo` and `make test` set up everything they need and are safe to re-run.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip --disable-pip-version-check
STAMP := $(VENV)/.moodlake-setup
PYTEST_ARGS ?=

export SPARK_LOCAL_IP ?= 127.0.0.1
export MOODLAKE_HOME ?= $(CURDIR)/lakehouse
export PYTHONUNBUFFERED := 1

.PHONY: setup demo test test-cluster bench experiments clean-lakehouse clean

setup: $(STAMP)

# Three pip calls (see requirements.txt): torch first, then the pinned stack, then petastorm
# without its dependencies (it declares setuptools<70, torch needs >=77). The Delta jars, Derby's
# network server and client (the shared metastore) and the s3a connector are resolved once into
# the virtual environment, so jobs and tests run offline afterwards (again when spark.py, which
# names them, changes). The JDBC server's read-only extension
# (lib/moodlake/java/ReadOnlySql.java) is compiled there with the JDK's javac.
$(STAMP): requirements.txt requirements-nodeps.txt setup.py lib/moodlake/spark.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip==25.3
	$(PIP) install -q $$(grep -E '^(torch|torchvision)==' requirements.txt)
	$(PIP) install -q -r requirements.txt
	$(PIP) install -q --no-deps -r requirements-nodeps.txt
	$(PIP) install -q --no-deps --no-build-isolation -e .
	$(PY) -m moodlake.spark resolve-jars
	$(PY) -m moodlake.sql_server build-read-only-jar
	@touch $(STAMP)

demo: setup
	$(VENV)/bin/moodlake demo

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

# The cluster suite alone (tests/cluster, also part of `make test`): a standalone master and two
# workers on 127.0.0.1, every job spark-submitted to them, a worker killed during scoring.
test-cluster: setup
	$(PY) -m pytest -m cluster tests/cluster -s $(PYTEST_ARGS)

bench: setup
	$(PY) -m moodlake_dev.bench.ingest
	$(PY) -m moodlake_dev.bench.models
	$(PY) -m moodlake_dev.bench.reader
	$(PY) -m moodlake_dev.bench.train_step
	$(PY) -m moodlake_dev.bench.ddp
	$(PY) -m moodlake_dev.bench.scoring
	$(PY) -m moodlake_dev.bench.tokenizer
	$(PY) -m moodlake_dev.bench.align
	$(PY) -m moodlake_dev.bench.csd_ingest

# The real-data table of BENCHMARKS.md (../shared/data; several hours on 2 cores: BENCHMARKS.md
# gives each run's time). Its own lakehouse, so the demo's is untouched; every step is
# idempotent, and a training run resumes. One runner command per experiment file of
# conf/experiments (one per published setting, in name order), each writing the results file its
# `run.out` names; `make -n experiments` lists them.
EXPERIMENTS_HOME ?= $(CURDIR)/lakehouse-experiments
EXPERIMENTS = MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(PY) -m moodlake_dev.experiments
EXPERIMENT_FILES := $(sort $(wildcard conf/experiments/*.yaml))
define newline


endef
experiments: setup
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake ingest dataset vso-twitter
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake ingest dataset emotion6
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake ingest dataset goemotions --taxonomy ekman
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake features
	$(foreach file,$(EXPERIMENT_FILES),$(EXPERIMENTS) $(file)$(newline))

clean-lakehouse:
	rm -rf "$(MOODLAKE_HOME)"

clean: clean-lakehouse
	rm -rf $(VENV) lib/*.egg-info
