# One command each on a fresh machine: `make demo` (events in, recommendations out on
# the embedded broker) and `make test` (the whole suite, brokers started by fixtures).
.PHONY: setup demo test test-unit lint bench evaluate

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/coldstream demo

test: setup
	.venv/bin/python -m pytest

test-unit: setup
	.venv/bin/python -m pytest -m unit

lint:
	.venv/bin/ruff check stream_app trainer tests bench

evaluate: setup
	.venv/bin/coldstream evaluate

bench: setup
	.venv/bin/coldstream bench serve
