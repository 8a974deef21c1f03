# make train / make test install what they need into .venv first (make install).
# Extra arguments go through ARGS: make train ARGS="model=segnet trainer.max_epochs=1"
PYTHON_BASE ?= python3
VENV := .venv
PYTHON := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install train test test-full clean

install: $(INSTALLED)

# Reinstalled whenever the dependencies or the verified pins change.
$(INSTALLED): pyproject.toml constraints.txt
	test -x $(PYTHON) || $(PYTHON_BASE) -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --constraint constraints.txt --editable ".[all,dev]"
	touch $@

train: install
	$(PYTHON) -m segkit.train $(ARGS)

test: install
	$(PYTHON) -m pytest -m "not slow" --durations=10 $(ARGS)

test-full: install
	$(PYTHON) -m pytest --durations=10 $(ARGS)

clean:
	rm -rf $(VENV) outputs .pytest_cache
