PY ?= python3

.PHONY: install demo test bench

install:
	bash scripts/install.sh

# The main job on a fresh machine: install, then run the local demo on the embedded model.
demo: install
	wspace generate --seed 1 --count 16 -o out/

test: install
	$(PY) -m pytest -q

bench:
	$(PY) bench/generator.py
