# The two entry points of README.md. Both set up .venv first (idempotent, seconds when done).
.PHONY: setup test test-all demo

setup:
	scripts/setup_env.sh

# Default suite (slow tests excluded; see setup.cfg). Exit code 5 (no test collected) fails.
test: setup
	scripts/run_tests.sh

# Everything, slow tests included.
test-all: setup
	scripts/run_tests.sh -m ""

# Main job. Until the camera -> panoptic_node demo (issue 7) exists: the panoptic head alone
# on a hand-built scene; writes out/head_demo.png.
demo: setup
	.venv/bin/python -m panoptic_ros.head_demo --out out
