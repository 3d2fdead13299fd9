# One command each on a fresh machine: `make demo` (events in, recommendations out on
# the embedded broker) and `make test` (the whole suite, brokers started by fixtures).
.PHONY: setup demo test test-unit lint format bench evaluate gpu-check

setup:
	bash scripts/setup.sh

demo: setup
	.venv/bin/coldstream demo

test: setup
	.venv/bin/python -m pytest

test-unit: setup
	.venv/bin/python -m pytest -m unit

# the checks .ci/run enforces before the tests
lint:
	.venv/bin/ruff check coldstream stream_app trainer devtools tests deploy
	.venv/bin/ruff format --check coldstream stream_app trainer devtools tests deploy
	.venv/bin/lint-imports --no-cache
	.venv/bin/mypy coldstream/core stream_app

format:
	.venv/bin/ruff format coldstream stream_app trainer devtools tests deploy
	.venv/bin/ruff check --fix coldstream stream_app trainer devtools tests deploy

evaluate: setup
	.venv/bin/coldstream evaluate

bench: setup
	.venv/bin/coldstream bench serve

# the GPU check (README: GPU): exits 2 at once without a GPU; GPU_CHECK_DRY_RUN=1 for the CPU
gpu-check:
	bash scripts/gpu-check.sh
