# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench i18n install clean reply
LOCALES := es fr de ar

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

# axe-core for the accessibility checks in the browser tests (from the npm registry).
NODE_STAMP := node_modules/.package-lock.json
$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund

install: $(STAMP)

run: $(STAMP)
	$(BIN)/whereabouts demo

test: $(STAMP) $(NODE_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# Extract page and message strings, merge them into every catalog, compile the catalogs.
i18n: $(STAMP)
	$(BIN)/pybabel extract -F babel.cfg --no-wrap --sort-by-file --project=whereabouts -o locale/messages.pot .
	for lang in $(LOCALES); do \
	  if [ -f locale/$$lang/LC_MESSAGES/messages.po ]; then \
	    $(BIN)/pybabel update --no-wrap --no-fuzzy-matching -i locale/messages.pot -d locale -l $$lang; \
	  else \
	    $(BIN)/pybabel init --no-wrap -i locale/messages.pot -d locale -l $$lang; \
	  fi; \
	done
	$(BIN)/pybabel compile --statistics -d locale

# A shopper's SMS reply to the running demo, signed as Twilio would: make reply FROM=+14155550005 BODY=2
reply: $(STAMP)
	$(BIN)/whereabouts sms reply --from '$(FROM)' --body '$(BODY)'

bench: $(STAMP)
	$(BIN)/python bench/ingest.py

clean:
	rm -rf $(VENV) var node_modules .pytest_cache .mypy_cache .ruff_cache .hypothesis
