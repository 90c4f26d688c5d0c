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

# one pytest worker per core (pytest-xdist), each test file on one worker
# (module fixtures are built once), one thread per worker so the workers do
# not oversubscribe the cores: about half the wall time of one process
test: install
	OMP_NUM_THREADS=1 $(PYTHON) -m pytest tests -q -p no:cacheprovider -n auto --dist loadfile
