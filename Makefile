# Two commands on a fresh clone: `make run` and `make test`.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/iom-gateway db upgrade
	$(VENV)/bin/iom-gateway demo load
	$(VENV)/bin/iom-gateway demo credentials
	$(VENV)/bin/gunicorn --bind 127.0.0.1:8000 --workers 2 --access-logfile - wsgi:app

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench

clean:
	rm -rf $(VENV) instance .pytest_cache .hypothesis
