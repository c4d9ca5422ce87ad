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

# The real-data table of BENCHMARKS.md (../shared/data; several hours on 2 cores: BENCHMARKS.md
# gives each run's time). Its own lakehouse, so the demo's is untouched; every step is
# idempotent, and a training run resumes.
EXPERIMENTS_HOME ?= $(CURDIR)/lakehouse-experiments
EXPERIMENTS = MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(PY) -m moodlake_dev.experiments
experiments: setup
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake ingest dataset vso-twitter
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake ingest dataset emotion6
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake ingest dataset goemotions --taxonomy ekman
	MOODLAKE_HOME=$(EXPERIMENTS_HOME) $(VENV)/bin/moodlake features
	$(EXPERIMENTS) --only vso --epochs 15 --out bench-results/realdata.json
	$(EXPERIMENTS) --only emotion6 --seeds 3 --epochs 15 --out bench-results/realdata.json
	$(EXPERIMENTS) --only goemotions joint joint-balanced --seeds 1 --epochs 4 --out bench-results/realdata.json
	$(EXPERIMENTS) --only vso --epochs 15 --image-trainable-stages 0 --out bench-results/realdata-frozen.json
	$(EXPERIMENTS) --only emotion6 --seeds 3 --epochs 15 --image-trainable-stages 0 --out bench-results/realdata-frozen.json
	$(EXPERIMENTS) --only joint --seeds 1 --epochs 4 --image-trainable-stages 0 --out bench-results/realdata-frozen.json
	$(EXPERIMENTS) --only goemotions --seeds 3 --epochs 2 --text-encoder minilm --text-trainable-layers 6 --out bench-results/realdata-minilm.json
	$(EXPERIMENTS) --only vso --epochs 15 --text-encoder minilm --text-trainable-layers 2 --out bench-results/realdata-minilm.json
	$(EXPERIMENTS) --only emotion6 --seeds 3 --epochs 15 --augment --image-trainable-stages 3 --lr 1e-4 --out bench-results/realdata-augment.json
	$(EXPERIMENTS) --only emotion6 --seeds 6 --epochs 30 --image-trainable-stages 0 --lr 1e-4 --out bench-results/realdata-e6-frozen-lr1e-4.json
	$(EXPERIMENTS) --only vso --epochs 30 --lr 1e-4 --out bench-results/realdata-vso-lr1e-4.json
	$(EXPERIMENTS) --only vso --epochs 30 --image-dropout 0.5 --head-dropout 0.25 --out bench-results/realdata-vso-dropout.json
	$(EXPERIMENTS) --only vso --epochs 30 --image-trainable-stages 0 --lr 1e-4 --out bench-results/realdata-vso-frozen-lr1e-4.json
	$(EXPERIMENTS) --only vso --epochs 15 --vso-dataset vso-twitter-plus-images --out bench-results/realdata-vso-plus-images.json
	$(EXPERIMENTS) --only vso --epochs 15 --vso-dataset vso-twitter-plus-texts --out bench-results/realdata-vso-plus-texts.json
	$(EXPERIMENTS) --only vso --epochs 15 --text-encoder minilm --text-trainable-layers 0 --out bench-results/realdata-vso-minilm0.json
	$(EXPERIMENTS) --only vso --epochs 15 --vso-dataset vso-twitter-plus-texts --text-encoder minilm --text-trainable-layers 0 --out bench-results/realdata-vso-plus-texts-minilm0.json
	$(EXPERIMENTS) --only vso --epochs 15 --vso-seeds 3 --out bench-results/realdata-vso-seeds.json
	$(EXPERIMENTS) --only joint-balanced --seeds 2 --epochs 2 --image-trainable-stages 0 --lr 1e-4 --text-encoder minilm --text-trainable-layers 6 --text-encoder-lr-scale 0.5 --out bench-results/realdata-joint-strong.json

clean-lakehouse:
	rm -rf "$(MOODLAKE_HOME)"

clean: clean-lakehouse
	rm -rf $(VENV) lib/*.egg-info
