PY ?= python3

.PHONY: install demo test bench

# Installed once per Python, and again only when what it installs from changes.
STAMP := .installed/$(subst /,_,$(shell command -v $(PY) 2>/dev/null || echo $(PY)))

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	PY=$(PY) bash scripts/install.sh
	@mkdir -p .installed && touch $@

# The main job on a fresh machine: install, then run the local demo on the embedded model.
demo: install
	$(PY) -m bot.cli demo -o out/demo

test: install
	$(PY) -m ruff check .
	$(PY) -m pytest -q

bench:
	$(PY) -m bench.generator
