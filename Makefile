# The README's two commands: `make demo` (main job end to end) and `make test` (the suite). Both set up first.
.PHONY: setup test demo bench
setup:
	bash scripts/setup.sh

test: setup
	# two workers, one module each at a time (module fixtures build once): half the wall time on 2 cores
	.venv/bin/python -m pytest -q -n 2 --dist loadfile

demo: setup
	.venv/bin/edge-gmm demo

bench: setup
	for b in benchmarks/bench_*.py; do .venv/bin/python $$b || exit 1; done
