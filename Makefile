# Two commands do all set-up (README): `make demo` and `make test`.
# torch is pinned to the local CPU wheel (2.13.0); an unpinned torch would download CUDA.
# dynamic-network-architectures goes in with --no-deps: its timm -> torchvision chain pulls a CUDA torch.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.hnas-installed
PYTEST_ARGS ?=
DEMO_DIR ?= demo-output
MUTANTS ?=
MUTATION_CHILDREN ?= 2

.PHONY: demo test test-slow bench mutation install system-deps clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q --no-deps dynamic-network-architectures==0.4.4
	$(BIN)/python -m pip install -q -e ".[torch,viz,dask,notebooks,dev]"
	$(BIN)/python -m pip install -q --no-deps nnunetv2==2.8.1 batchgenerators==0.25.5
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	$(BIN)/python -c "import torch, monai, lark, dynamic_network_architectures; assert torch.__version__.startswith('2.13.0'), torch.__version__"
	touch $(STAMP)

# graphviz's `dot` renders diagrams; without it hnas falls back to text trees.
system-deps:
	@command -v dot >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq graphviz >/dev/null) \
	      || echo "warning: could not install graphviz; diagrams fall back to text"; \
	  else echo "note: graphviz 'dot' not found; diagrams fall back to text"; fi; }

demo: $(STAMP) system-deps
	$(BIN)/python -m hnas.demo --out $(DEMO_DIR)

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# `make test` runs the slow-marked tests too; test-slow runs only them, very_slow ones included (HNAS_SLOW=1).
test-slow: $(STAMP) system-deps
	HNAS_SLOW=1 $(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_core.py
	$(BIN)/python benchmarks/bench_search_overhead.py
	$(BIN)/python benchmarks/bench_priorband.py --quick --no-neps
	$(BIN)/python benchmarks/bench_train.py

# Mutation testing (docs/mutation.md): mutmut mutates the modules named in pyproject.toml's
# [tool.mutmut] inside mutants/ and reruns their tests; survivors are listed by the report.
# One group: make mutation MUTANTS='hnas.search.pareto*'. Results are cached in mutants/;
# delete it to start over. One torch thread per child: the children share the cores.
mutation: $(STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/mutmut run --max-children $(MUTATION_CHILDREN) $(MUTANTS)
	$(BIN)/python benchmarks/mutation_report.py --survivors

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache mutants
