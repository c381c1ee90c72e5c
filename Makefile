VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: install test test-fast demo lint clean chromium

$(PY):
	python3 -m venv $(VENV)
	$(PIP) install --upgrade pip

$(STAMP): $(PY) pyproject.toml constraints.txt
	$(PIP) install torch==2.14.1 torchvision==0.29.1
	$(PIP) install -c constraints.txt -e .[dev]
	touch $(STAMP)

install: $(STAMP)

# The leaderboard browser test renders the Space in Debian's Chromium; where it cannot be installed
# the test reports itself skipped with the reason.
chromium:
	@command -v chromium >/dev/null 2>&1 || { (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq chromium) >/dev/null 2>&1 || echo "note: could not install Debian's chromium"; }

# Everything, as CI runs it.
test: $(STAMP) chromium
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q

# The quick loop: no training runs, demo, multi-process jobs or browser.
test-fast: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -m "not slow and not browser and not distributed"

demo: $(STAMP)
	$(VENV)/bin/pathinsight demo --output demo_output

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf demo_output build *.egg-info
