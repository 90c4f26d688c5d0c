# repseg: the two commands of the README.
#   make demo   installs everything and runs the main job on the embedded
#               synthetic dataset
#   make test   installs everything and runs the test-suite
# Both are idempotent: the install step checks what is already there.
PYTHON ?= python3
export PYTHON

.PHONY: install demo test
install:
	bash scripts/install.sh

demo: install
	$(PYTHON) tools/demo.py

test: install
	$(PYTHON) -m pytest tests -q -p no:cacheprovider
