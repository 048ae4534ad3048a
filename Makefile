PY ?= python3

.PHONY: install demo test bench

install:
	PY=$(PY) bash scripts/install.sh

# The main job on a fresh machine: install, then run the local demo on the embedded model.
demo: install
	$(PY) -m bot.cli demo -o out/demo

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench:
	$(PY) -m bench.generator
