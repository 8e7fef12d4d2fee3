# The two entry points of README.md. Both set up .venv first (idempotent, seconds when done).
.PHONY: setup test test-pure demo demo-video model

setup:
	scripts/setup_env.sh

# The whole suite, all three tiers (see setup.cfg). Exit code 5 (no test collected) fails.
test: setup
	scripts/run_tests.sh

# Tier 1 only (pure functions and objects): the quick loop while editing.
test-pure: setup
	scripts/run_tests.sh -m pure

# Main job: sim camera -> panoptic_node (shipped model) -> evaluator, over DDS; prints FPS,
# latency, PQ and occupancy IoU and writes out/demo_*.
demo: setup
	.venv/bin/python -m panoptic_ros.ros.demo --out out

# The demo on a real street video: Debian's opencv-doc ships vtest.avi (installed if missing).
VTEST = /usr/share/doc/opencv-doc/examples/data/vtest.avi
demo-video: setup
	test -f $(VTEST) || (apt-get update -qq && apt-get install -y -qq opencv-doc)
	.venv/bin/python -m panoptic_ros.ros.demo --video $(VTEST) --out out/video

# Retrain the shipped model from scratch (renders the datasets first; hours on a 2-core CPU).
model: setup
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split train --num 3000 --seed 1 \
		--width 320 --height 240
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split val --num 200 --seed 2
	.venv/bin/panoptic-ros-train --config config/train_sim_light.yaml
