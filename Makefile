# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow test-services install system-deps clean report

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first: 2.13.0 is the local CPU build; anything later would pull CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,test]'
	# serving's numba-compiled code (DSAN's encoder, the top-K scan) into numba's cache (10-30 s once; a
	# service's first start and their tests then read it)
	$(BIN)/python -c 'from nextclick.serve.index import compile_ahead; compile_ahead()'
	touch $(STAMP)

install: $(STAMP)

# What the serving tests need from the system, from Debian's packages: a real redis-server
# (tests/test_serve_redis.py starts its own on a free port) and headless Chromium with its driver
# (tests/test_serve_page.py). Installed only where missing; needs root (CI runs as root).
SYSTEM_PACKAGES := redis-server:redis-server chromium:chromium chromedriver:chromium-driver
system-deps:
	@missing=""; for pair in $(SYSTEM_PACKAGES); do \
	  command -v $${pair%%:*} >/dev/null 2>&1 || missing="$$missing $${pair#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing"; apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; fi

demo: $(STAMP)
	$(BIN)/nextclick demo

# one pytest worker per core (pytest-xdist): each test runs single-threaded torch work. Whole files go to
# one worker (loadfile), so the models a file trains once (tests/model_contract.py's fitted, module
# fixtures) are trained on one worker, not on both: 86 s against 102 s with work stealing, quiet, at
# 99adec3+. (loadgroup would group by test instead, but pytest-xdist 3.8 cannot name groups under pytest 9)
test: $(STAMP)
	$(BIN)/python -m pytest -q -n auto --dist loadfile

# the long reference tests (faithful DSAN training, grid worker processes, all of diginetica's test set)
test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m slow

# the tests that start several server processes (each imports torch): about a minute of their own,
# kept out of `make test` so that it stays under 90 s on two cores; .ci/run runs them after it
test-services: $(STAMP)
	$(BIN)/python -m pytest -q -n auto -m services

# results/INDEX.md, docs/results.md and its figures, made from the committed result files and
# results/manifest.json alone (no dataset is read)
report: $(STAMP)
	mkdir -p docs/figures
	{ echo "# Benchmark results"; echo; \
	  echo "Made by \`make report\` (\`nextclick report results --index results/INDEX.md\`) from the committed result files"; \
	  echo "alone; each run's files are in results/<dataset>/<model>/<run id>/, the headline run of each model in"; \
	  echo "results/INDEX.md. Percent; validation-selected, test evaluated once. Per-length figures:"; \
	  echo "docs/figures/by_length_<dataset>.png."; \
	  echo; $(BIN)/nextclick report results --index results/INDEX.md --by-length docs/figures/by_length.png \
	    --history docs/figures/validation_curves.png; \
	  echo "## The seed models by prefix length (NARM Table 5, SR-IEM Figure 2)"; echo; \
	  echo "Figures: docs/figures/seed_models_by_length_<dataset>.png."; echo; \
	  $(BIN)/nextclick report results/*/narm/*/result.json results/*/sr-iem/*/result.json \
	    --by-length docs/figures/seed_models_by_length.png --every-length; } > docs/results.md
	# each paper's tables and figures beside the published numbers (docs/reproduction*), from the same files
	for paper in dsan sriem narm; do $(BIN)/nextclick reproduce $$paper > /dev/null || exit 1; done

clean:
	rm -rf $(VENV) runs
