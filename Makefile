# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv and install
# what is missing (the Python packages; for the tests and benchmarks also dcmtk, and Orthanc,
# which the interoperability tests start as a sender).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test bench lint dcmtk orthanc clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	@touch $(STAMP)

dcmtk:
	@command -v storescu >/dev/null 2>&1 || { \
	  echo "installing dcmtk (storescu/echoscu/storescp) ..."; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk >/dev/null; }

orthanc:
	@command -v Orthanc >/dev/null 2>&1 || { \
	  echo "installing orthanc (interoperability tests) ..."; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq orthanc >/dev/null; }

demo: $(STAMP)
	$(BIN)/dicomctl demo

test: $(STAMP) dcmtk orthanc
	$(BIN)/python -m pytest -n 2 --dist loadfile tests

bench: $(STAMP) dcmtk
	$(BIN)/python -m bench

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache build *.egg-info
