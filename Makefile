# make test / make demo / make bench: each creates .venv and installs what it needs first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The tested torch: on these machines this pin resolves to the CPU wheel on disk.
TORCH  := torch==2.13.0

.PHONY: test demo bench bench-cluster install clean torchsuite

$(STAMP): setup.py Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check $(TORCH)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[mpi,test]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) -m pytest -q tests

demo: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/demo.sh

bench: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash benchmarks/collectives/matrix.sh 1

# torch's own distributed_test.py on backend ringflow and on gloo, every test that applies to a CPU
# backend (long: about 10 s a test; benchmarks/results/torch_suite.md). Installs the torchsuite extra.
SUITE_OUT ?= benchmarks/results/torch_suite.md

torchsuite: $(STAMP)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[torchsuite]'
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/backend/torch_suite.py --both -k cpu \
		--budget 14400 --log /tmp/ringflow_suite_{backend}.log --out $(SUITE_OUT)

# Emulated hosts (root and iproute2; benchmarks/cluster/README.md): make bench-cluster HOSTS=3 RATE=10gbit
HOSTS      ?= 2
RANKS      ?= 1
RATE       ?= 2gbit
MINBYTES   ?= 1M
MAXBYTES   ?= 64M
ALGORITHMS ?= auto,ring
COLLECTIVE ?= all_reduce

bench-cluster: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" $(PY) benchmarks/cluster/cluster.py --hosts $(HOSTS) \
		--ranks-per-host $(RANKS) --rate $(RATE) -b $(MINBYTES) -e $(MAXBYTES) \
		--algorithm $(ALGORITHMS) --collective $(COLLECTIVE)

clean:
	rm -rf $(VENV) build *.egg-info
