# The two commands of the README: `make demo` and `make test`. Both build .venv from nothing.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_OUT := demo-out

.PHONY: demo test bench mutation models image clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,ray]'
	touch $(STAMP)

# Check every photo in samples/ and write a preview picture per photo to demo-out/.
# emo-prep exits 1 when some photo is rejected, as some samples are meant to be.
demo: $(STAMP)
	$(BIN)/emo-prep check --preview $(DEMO_OUT) samples/; status=$$?; test $$status -le 1

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15

bench: $(STAMP)
	$(BIN)/python bench/accuracy.py
	$(BIN)/python bench/occlusion.py
	$(BIN)/python bench/fairness.py
	$(BIN)/python bench/detectors.py
	$(BIN)/python bench/hips.py
	$(BIN)/python bench/derived.py
	$(BIN)/python bench/fix.py
	$(BIN)/python bench/speed.py
	$(BIN)/python bench/calibrate.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/sandbox.py

# Mutation testing (mutmut 3, config in pyproject.toml) of the rules, the geometry and the key's
# path; prints the score per module. Minutes, not part of `make test`. MODULES=geometry limits it.
mutation: $(STAMP)
	$(BIN)/python bench/mutation.py --max-children 2 $(MODULES)

# Rebuild models/ from the mediapipe 0.10.21 wheel on PyPI and check the hashes.
models: $(STAMP)
	$(BIN)/python models/rebuild.py

# A container image (Dockerfile); needs a Docker engine and the network. EXTRAS=ray adds Ray.
IMAGE ?= emo-prep
EXTRAS ?=
image:
	docker build --build-arg EXTRAS=$(EXTRAS) -t $(IMAGE):$$(sed -n 's/^__version__ = "\(.*\)"/\1/p' pipeline/__init__.py) -t $(IMAGE):latest .

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
