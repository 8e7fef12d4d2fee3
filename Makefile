# The two entry points of README.md. Both set up .venv first (idempotent, seconds when done).
.PHONY: setup test test-pure demo demo-video model model-ablation model-light model-data

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

# Retrain the shipped model from scratch: renders the datasets, then the training stages of
# models/README.md, each starting from the previous stage's export (about 5.3 hours of training
# on a 2-core CPU: run the stages in separate sittings if need be), then its INT8 files and
# the learned parts of the spatial_ranking and refined overlap policies.
TRAIN = .venv/bin/panoptic-ros-train --config config/train_sim_branches.yaml
STAGE = models/stages/panoptic_branches_sim_stage
SHIPPED = models/panoptic_branches_sim.safetensors
POLICY = .venv/bin/panoptic-ros-train-policy
model: setup model-data
	$(TRAIN) --set train.stop_after_epochs=3 --set out=runs/branches_sim_stage1 \
		--set export_to=$(STAGE)1.safetensors
	$(TRAIN) --set train.init_from=$(STAGE)1.safetensors --set train.epochs=3 \
		--set out=runs/branches_sim_stage2 --set export_to=$(STAGE)2.safetensors
	$(TRAIN) --set model.borderness_map=true --set train.init_from=$(STAGE)2.safetensors \
		--set train.epochs=1 --set train.lr=0.0005 --set out=runs/branches_sim_stage3 \
		--set export_to=$(STAGE)3.safetensors
	$(TRAIN) --set model.borderness_map=true --set train.init_from=$(STAGE)3.safetensors \
		--set train.epochs=3 --set train.lr=0.0005 --set out=runs/branches_sim_stage4 \
		--set export_to=$(STAGE)4.safetensors
	$(TRAIN) --set model.borderness_map=true --set data.train_split=train6k \
		--set train.init_from=$(STAGE)4.safetensors --set train.epochs=3 --set train.lr=0.0005 \
		--set out=runs/branches_sim_stage5 --set export_to=$(STAGE)5.safetensors
	$(TRAIN) --set model.borderness_map=true --set data.train_split=train6k \
		--set train.init_from=$(STAGE)5.safetensors --set train.epochs=4 --set train.lr=0.0005 \
		--set out=runs/branches_sim_stage6 --set export_to=$(STAGE)6.safetensors
	mv $(STAGE)6.safetensors $(SHIPPED)
	.venv/bin/panoptic-ros-quantize --model $(SHIPPED) --data data/sim_calib --split calib \
		--num 200 --float-first 3 --convolutions-only --moving-average --float-predictors
	.venv/bin/panoptic-ros-quantize --model $(SHIPPED) --data data/sim_calib --split calib \
		--num 200 --float-first 0 --flavour tensorrt
	.venv/bin/panoptic-ros-quantize --model $(SHIPPED) --data data/sim_calib --split calib \
		--num 200 --float-first 3 --convolutions-only --moving-average --float-predictors \
		--input-size 384 288
	.venv/bin/panoptic-ros-quantize --model $(SHIPPED) --data data/sim_calib --split calib \
		--num 200 --float-first 0 --input-size 384 288 --flavour tensorrt
	.venv/bin/panoptic-ros-quantize --model $(SHIPPED) --data data/sim_calib --split calib \
		--num 200 --float-first 3 --convolutions-only --float-predictors --input-size 448 336
	$(POLICY) --model $(SHIPPED) --policy spatial_ranking --score-threshold 0.2
	$(POLICY) --model $(SHIPPED) --policy refined --score-threshold 0.2

# The ablation rows of benchmarks/bench_ablation.py that retrain without a branch: from the
# shipped weights, one more epoch of `train` (375 iterations, 7 to 13 min each on a 2-core
# CPU) with every branch (the control), without the Pyramid Pooling Module, without the
# center heatmap, and with every branch and the zoom-in augmentation; and three epochs (2250
# iterations, 33 to 36 min) on `train` and 3000 close-range frames (objects 0.3-6 m ahead);
# and the same three epochs on `train` and 3000 frames seen from a robot driven 0-8 m along
# the road (65 min); and two epochs of `train6k` at the node's 384x288 input (1500
# iterations, 62 min).
ABLATION = models/stages/panoptic_branches_sim_ablation
RETRAIN = $(TRAIN) --set model.borderness_map=true --set train.init_from=$(SHIPPED) \
	--set train.epochs=1 --set train.lr=0.0005
model-ablation: setup model-data
	$(RETRAIN) --set out=runs/ablation_all --set export_to=$(ABLATION)_all.safetensors
	$(RETRAIN) --set model.ppm=false --set out=runs/ablation_no_ppm \
		--set export_to=$(ABLATION)_no_ppm.safetensors
	$(RETRAIN) --set model.center_heatmap=false --set out=runs/ablation_no_heatmap \
		--set export_to=$(ABLATION)_no_heatmap.safetensors
	$(RETRAIN) --set data.zoom=[0.5,2.0] --set out=runs/ablation_zoom \
		--set export_to=$(ABLATION)_zoom.safetensors
	$(RETRAIN) --set data.train_split=[train,train_close] --set train.epochs=3 \
		--set out=runs/ablation_close --set export_to=$(ABLATION)_close.safetensors
	$(RETRAIN) --set data.train_split=[train,train_drive] --set train.epochs=3 \
		--set out=runs/ablation_drive --set export_to=$(ABLATION)_drive.safetensors
	$(TRAIN) --set model.borderness_map=true --set model.input_size=[384,288] \
		--set data.train_split=train6k --set train.init_from=$(SHIPPED) --set train.epochs=2 \
		--set train.lr=0.0005 --set out=runs/branches_sim_stage7_384 \
		--set export_to=models/stages/panoptic_branches_sim_stage7_384.safetensors

# The light model (MobileNetV2 + RetinaNet, models/panoptic_light_sim.safetensors): one run.
model-light: setup model-data
	.venv/bin/panoptic-ros-train --config config/train_sim_light.yaml
	.venv/bin/panoptic-ros-quantize --model models/panoptic_light_sim.safetensors \
		--data data/sim_calib --split calib --num 200 --float-first 6
	.venv/bin/panoptic-ros-quantize --model models/panoptic_light_sim.safetensors \
		--data data/sim_calib --split calib --num 200 --float-first 6 --flavour tensorrt

model-data: setup
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split train --num 3000 --seed 1 \
		--width 320 --height 240
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split train6k --num 6000 --seed 1 \
		--width 320 --height 240
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split train_close --num 3000 --seed 4 \
		--width 320 --height 240 --set area_x=[0.3,6.0] --set area_y=[-4.0,4.0]
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split train_drive --num 3000 --seed 5 \
		--width 320 --height 240 --set drive_distance=[0.0,8.0]
	.venv/bin/panoptic-ros-sim export --out data/sim320 --split val --num 200 --seed 2
	.venv/bin/panoptic-ros-sim export --out data/sim_calib --split calib --num 200 --seed 21
	.venv/bin/panoptic-ros-sim export --out data/sim_policy --split train --num 250 --seed 31
	.venv/bin/panoptic-ros-sim export --out data/sim_policy --split train_crowded --num 250 \
		--seed 32 --set crowd_probability=1.0
	.venv/bin/panoptic-ros-sim export --out data/sim_policy --split select --num 100 --seed 33
