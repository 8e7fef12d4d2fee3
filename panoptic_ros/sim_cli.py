"""panoptic-ros-sim: export simulated datasets in COCO panoptic format.

  panoptic-ros-sim export --out DIR --split train --num N --seed S [--width 640 --height 480]
                          [--workers 2] [--no-progress] [--set FIELD=VALUE ...]
                   --set overrides a SimConfig range (panoptic_ros/core/sim/world.py), e.g. a
                   crowded split seen from a low, level camera:
                   --set camera_height=[0.3,0.6] --set camera_pitch_deg=[0,5]
                   --set crowd_probability=1.0
  panoptic-ros-sim preview --seed S --out FILE.png   one frame: RGB | panoptic | occupancy
  panoptic-ros-sim sequence --out DIR --frames N [--seed S --fps 10 --speed 1.0]
                   a robot driving through one scene, rendered once for replay
                   (layout: panoptic_ros/core/sim/sequence.py)
  panoptic-ros-sim rig --out DIR --frames N [--seed S --fps 5 --speed 0.5
                   --layout surround|front_sides]
                   a rig of cameras on one robot (four 90 degrees apart, or three wide ones
                   ahead) driving through one scene, with odometry (core/sim/rig.py)
  panoptic-ros-sim footprint-priors [--first 1000 --num 120 --workers 2 --out FILE.md]
                   measure the thing classes' footprint priors and sweep footprint_scale
                   and top_weight on calibration frames (panoptic_ros/core/sim/priors.py);
                   prints the config/panoptic.yaml lines and writes the record to FILE.md

Layout under DIR (COCO panoptic, plus what a robot-perception dataset needs besides):
  images/<split>/<index>.jpg          RGB (JPEG, quality 95)
  panoptic/<split>/<index>.png        COCO panoptic PNG (id = R + 256 G + 256^2 B)
  annotations/panoptic_<split>.json   images, annotations (segments_info), categories
  extras/<split>/<index>_depth.png    uint16 depth in millimetres along the optical axis
  extras/<split>/<index>_occupancy.png  ground-truth grid, uint8: value + 1 (0 = unknown)
  extras/<split>/<index>.json         camera_info, T_base_optical, T_world_base (the robot's pose:
                                      identity unless --set drive_distance=...), grid spec,
                                      footprints (world frame)
Image i of a split renders scene seed SeedSequence([seed, i]): the dataset is the same for a
seed whatever the number of workers.
"""

import argparse
import dataclasses
import json
import multiprocessing
from pathlib import Path
import time

import cv2
import numpy as np
from tqdm import tqdm
import yaml

from panoptic_ros.core.camera_model import camera_info_dict
from panoptic_ros.core.machine import cpu_model
from panoptic_ros.core.sim.coco import annotation, write_image_jpeg, write_panoptic_png
from panoptic_ros.core.sim.occupancy_gt import write_grid_png
from panoptic_ros.core.sim.priors import (calibration_sweep, CALIBRATION_SEEDS,
                                          measure_footprint_priors)
from panoptic_ros.core.sim.rig import render_rig_sequence, RIGS
from panoptic_ros.core.sim.sequence import render_sequence
from panoptic_ros.core.sim.taxonomy import (
    class_colors, CLASSES, coco_categories, LABEL_DIVISOR)
from panoptic_ros.core.visualization import colorize_panoptic, occupancy_to_rgb, overlay
from panoptic_ros.core.sim.world import render_random_frame, SimConfig


def frame_seed(seed, index):
    """The scene seed of image `index` of a dataset with seed `seed`."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def _export_one(job):
    """Render and write image `index`; returns its COCO image and annotation entries."""
    out, split, index, seed, config = job
    frame = render_random_frame(frame_seed(seed, index), config)
    name = f'{index:06d}'
    write_image_jpeg(out / 'images' / split / f'{name}.jpg', frame.rgb)
    write_panoptic_png(out / 'panoptic' / split / f'{name}.png', frame.panoptic)
    extras = out / 'extras' / split
    depth_mm = np.clip(np.rint(frame.depth * 1000), 0, 65535).astype(np.uint16)
    cv2.imwrite(str(extras / f'{name}_depth.png'), depth_mm)
    write_grid_png(extras / f'{name}_occupancy.png', frame.occupancy)
    (extras / f'{name}.json').write_text(json.dumps({
        'camera_info': camera_info_dict(frame.K, config.width, config.height),
        'T_base_optical': frame.T_base_optical.tolist(),
        'T_world_base': frame.T_world_base.tolist(),
        'grid': dataclasses.asdict(frame.grid),
        'footprints': [{'id': i, 'polygon': p.tolist()} for i, p in frame.footprints],
    }))
    image = {'id': index, 'file_name': f'{name}.jpg', 'width': config.width,
             'height': config.height}
    return image, annotation(index, f'{name}.png', frame.segments)


def export(out, split, num, seed, config=SimConfig(), workers=2, progress=True):
    """Write `num` images of `split` under `out`; returns (seconds, images per second)."""
    out = Path(out)
    for sub in ('images', 'panoptic', 'extras'):
        (out / sub / split).mkdir(parents=True, exist_ok=True)
    (out / 'annotations').mkdir(parents=True, exist_ok=True)
    jobs = [(out, split, index, seed, config) for index in range(num)]
    start = time.perf_counter()
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
        results = list(tqdm(pool.imap(_export_one, jobs), total=num, disable=not progress,
                            desc=f'{split}', unit='img'))
    seconds = time.perf_counter() - start
    (out / 'annotations' / f'panoptic_{split}.json').write_text(json.dumps({
        'info': {'description': f'panoptic_ros simulated world, split {split}, seed {seed}',
                 'sim_config': dataclasses.asdict(config)},
        'images': [image for image, _ in results],
        'annotations': [ann for _, ann in results],
        'categories': coco_categories(),
    }))
    return seconds, num / seconds


def preview(seed, out, config=SimConfig()):
    """Write a picture of one frame: RGB, panoptic overlay, ground-truth occupancy grid."""
    frame = render_random_frame(seed, config)
    colored = colorize_panoptic(frame.panoptic, LABEL_DIVISOR, class_colors())
    grid = occupancy_to_rgb(frame.occupancy, cell_pixels=max(1, config.height // 200))
    grid = cv2.resize(grid, (config.height * grid.shape[1] // grid.shape[0], config.height),
                      interpolation=cv2.INTER_NEAREST)
    picture = np.concatenate([frame.rgb, overlay(frame.rgb, colored, 0.6, frame.panoptic),
                              grid], 1)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR))
    return frame


def _render(seed):
    return render_random_frame(seed, SimConfig())


def footprint_priors(seeds, workers=2):
    """Markdown record of the priors measured on frames `seeds` and the calibration sweep."""
    start = time.perf_counter()
    with multiprocessing.get_context('spawn').Pool(workers) as pool:
        frames = list(tqdm(pool.imap(_render, seeds), total=len(seeds), unit='frame',
                           desc='render'))
    priors, wall = measure_footprint_priors(frames)
    sweep = calibration_sweep(frames, priors, wall)
    best = max(sweep, key=sweep.get)
    names = [CLASSES[c - 1].name for c in priors]
    lines = [f'# Footprint priors, {len(frames)} calibration frames (seeds {seeds[0]}-'
             f'{seeds[-1]}, 640x480)', '', f'Machine: {cpu_model()}; '
             f'{time.perf_counter() - start:.0f} s. `panoptic-ros-sim footprint-priors '
             f'--first {seeds[0]} --num {len(seeds)}`.', '',
             '| class | length (m) | width (m) | contact offset (m) | height (m) |',
             '|---|---|---|---|---|']
    lines += [f'| {n} | {p.length:.2f} | {p.width:.2f} | {p.contact_offset:.2f} | '
              f'{p.height:.2f} |' for n, p in zip(names, priors.values())]
    lines += ['', f'Walls: thickness {wall:.2f} m (obstacle_depth).', '',
              'Mean occupied IoU, ground-truth labels in, by footprint_scale (rows) and '
              'top_weight (columns):', '']
    weights = sorted({w for _, w in sweep})
    lines += ['| footprint_scale | ' + ' | '.join(f'{w:g}' for w in weights) + ' |',
              '|---' * (len(weights) + 1) + '|']
    for scale in sorted({s for s, _ in sweep}):
        cells = ' | '.join(f'{sweep[scale, w]:.1f}' for w in weights)
        lines.append(f'| {scale:g} | {cells} |')
    lines += ['', f'Best: footprint_scale {best[0]:g}, top_weight {best[1]:g} '
              f'({sweep[best]:.1f}).', '', 'config/panoptic.yaml:', '', '```yaml',
              f'    footprint_classes: {json.dumps(names)}',
              '    footprint_priors: [' + ',\n                       '.join(
                  f'{p.length:g}, {p.width:g}, {p.contact_offset:g}, {p.height:g}'
                  for p in priors.values()) + ']',
              f'    footprint_scale: {best[0]:g}', f'    obstacle_depth: {wall:g}', '```']
    return '\n'.join(lines) + '\n'


def sim_config(width, height, overrides=()):
    """SimConfig of the given size with 'field=value' overrides (YAML values, lists as
    tuples); ValueError on an unknown field or a malformed override."""
    fields = {f.name for f in dataclasses.fields(SimConfig)}
    values = {'width': width, 'height': height}
    for item in overrides:
        name, sep, text = item.partition('=')
        if not sep or name not in fields:
            raise ValueError(f'--set {item!r}: expected FIELD=VALUE with FIELD one of '
                             f'{sorted(fields)}')
        value = yaml.safe_load(text)
        values[name] = tuple(value) if isinstance(value, list) else value
    return SimConfig(**values)


def main(argv=None):
    parser = argparse.ArgumentParser(prog='panoptic-ros-sim', description=__doc__.split('\n')[0])
    commands = parser.add_subparsers(dest='command', required=True)
    ex = commands.add_parser('export', help='export a COCO panoptic dataset split')
    ex.add_argument('--out', type=Path, required=True)
    ex.add_argument('--split', default='train')
    ex.add_argument('--num', type=int, required=True)
    ex.add_argument('--seed', type=int, default=0)
    ex.add_argument('--width', type=int, default=640)
    ex.add_argument('--height', type=int, default=480)
    ex.add_argument('--workers', type=int, default=2)
    ex.add_argument('--no-progress', action='store_true', help='no progress bar')
    ex.add_argument('--set', action='append', default=[], metavar='FIELD=VALUE',
                    help='override a SimConfig field (YAML value; lists become ranges)')
    pv = commands.add_parser('preview', help='picture of one frame with its ground truth')
    pv.add_argument('--seed', type=int, default=0)
    pv.add_argument('--out', type=Path, required=True)
    sq = commands.add_parser('sequence', help='render a driving sequence for replay')
    sq.add_argument('--out', type=Path, required=True)
    sq.add_argument('--frames', type=int, required=True)
    sq.add_argument('--seed', type=int, default=0)
    sq.add_argument('--fps', type=float, default=10.0)
    sq.add_argument('--speed', type=float, default=1.0, help='m/s')
    sq.add_argument('--width', type=int, default=640)
    sq.add_argument('--height', type=int, default=480)
    rg = commands.add_parser('rig', help='render the surround rig driving through a scene')
    rg.add_argument('--out', type=Path, required=True)
    rg.add_argument('--frames', type=int, required=True)
    rg.add_argument('--seed', type=int, default=0)
    rg.add_argument('--fps', type=float, default=5.0)
    rg.add_argument('--speed', type=float, default=0.5, help='m/s')
    rg.add_argument('--layout', choices=RIGS, default='surround')
    fp = commands.add_parser('footprint-priors', help='measure the footprint priors')
    fp.add_argument('--first', type=int, default=CALIBRATION_SEEDS[0])
    fp.add_argument('--num', type=int, default=len(CALIBRATION_SEEDS))
    fp.add_argument('--workers', type=int, default=2)
    fp.add_argument('--out', type=Path,
                    default=Path('benchmarks/results/footprint_priors.md'))
    args = parser.parse_args(argv)
    if args.command == 'footprint-priors':
        if args.num < 1 or args.workers < 1:
            parser.error('--num and --workers must be >= 1')
        text = footprint_priors(list(range(args.first, args.first + args.num)),
                                args.workers)
        print(text)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
        print(f'written to {args.out}')
        return
    if args.command == 'sequence':
        if args.frames < 1 or args.fps <= 0:
            parser.error('--frames must be >= 1 and --fps > 0')
        with tqdm(total=args.frames, desc='sequence', unit='frame') as bar:
            render_sequence(args.out, args.seed, args.frames, args.fps, args.speed,
                            SimConfig(width=args.width, height=args.height),
                            progress=lambda done, total: bar.update(1))
        print(f'wrote {args.frames} frames to {args.out}')
        return
    if args.command == 'rig':
        if args.frames < 1 or args.fps <= 0:
            parser.error('--frames must be >= 1 and --fps > 0')
        with tqdm(total=args.frames, desc='rig', unit='moment') as bar:
            render_rig_sequence(args.out, args.seed, args.frames, RIGS[args.layout],
                                fps=args.fps, speed=args.speed,
                                progress=lambda done, total: bar.update(1))
        print(f'wrote {args.frames} moments of {len(RIGS[args.layout])} cameras to {args.out}')
        return
    if args.command == 'preview':
        frame = preview(args.seed, args.out)
        print(f'wrote {args.out}: segments ' +
              ', '.join(f"{CLASSES[s['category_id'] - 1].name}:{s['id']}"
                        for s in frame.segments))
        return
    if args.num < 1 or args.workers < 1:
        parser.error('--num and --workers must be >= 1')
    try:
        config = sim_config(args.width, args.height, args.set)
    except ValueError as error:
        parser.error(str(error))
    seconds, rate = export(args.out, args.split, args.num, args.seed, config, args.workers,
                           progress=not args.no_progress)
    print(f'wrote {args.num} images of split {args.split} to {args.out} in {seconds:.1f} s '
          f'({rate:.2f} images/s, {args.workers} workers)')


if __name__ == '__main__':
    main()
