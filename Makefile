# The README's two commands: `make demo` (main job end to end) and `make test` (the suite). Both set up first.
.PHONY: setup test demo bench
setup:
	bash scripts/setup.sh

test: setup
	.venv/bin/python -m pytest -q

demo: setup
	.venv/bin/edge-gmm demo

bench: setup
	for b in benchmarks/bench_*.py; do .venv/bin/python $$b || exit 1; done
