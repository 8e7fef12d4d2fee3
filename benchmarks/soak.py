"""Soak: panoptic_node under input at twice its processing rate for 10,000 frames.

Starts the node (shipped model, --backend) in its own process, measures the rate it can
process with a saturating run (30 Hz camera, 150 frames), then publishes --frames camera
frames at twice that rate (newest frame wins: about half are dropped at the input) and
records every output.
Reports output rate, age p50 / p95 / max, RSS after warm-up and at the end (growth must
stay < 5 %), the node's drop and failure counters from /diagnostics, and whether it is
still up and exits cleanly (code 0 on SIGTERM). Prints a table and writes it to a file.

Usage: python benchmarks/soak.py [--frames 10000] [--backend onnxruntime_int8]
           [--out benchmarks/results/soak_cpu.md]
"""

import argparse
from pathlib import Path
import subprocess
import sys
import tempfile
import time

from common import machine_description, write_result
from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id
from ros_load import run_load

COUNTERS = ('received_images', 'processed', 'dropped_newer_frame', 'skipped_no_subscribers',
            'failed_pipeline_exception', 'dropped_non_finite_output')


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--frames', type=int, default=10000)
    parser.add_argument('--width', type=int, default=640)
    parser.add_argument('--height', type=int, default=480)
    parser.add_argument('--backend', default='onnxruntime_int8')
    parser.add_argument('--warmup-fraction', type=float, default=0.1,
                        help='RSS growth is measured from this fraction of the run')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/soak_cpu.md'))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix='soak_'))
    env = isolated_ros_env(pick_domain_id(), work / 'ros_home')
    log = open(work / 'node.log', 'w')
    proc = subprocess.Popen([sys.executable, '-m', 'panoptic_ros.ros.panoptic_node',
                             '--ros-args', '-p', f'backend:={args.backend}',
                             '-p', f'cache_dir:={work / "cache"}'],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    started = time.time()
    try:
        calm = run_load(proc, env, work / 'calm', args.width, args.height, 30.0, 150,
                        warmup=10)
        rate = 2.0 * calm['fps']
        print(f'{calm["fps"]:.1f} FPS at a 30 Hz camera: soaking at {rate:.1f} Hz', flush=True)
        soak = run_load(proc, env, work / 'soak', args.width, args.height, rate, args.frames,
                        warmup=20)
        alive = proc.poll() is None
    finally:
        proc.terminate()
        code = proc.wait(timeout=60)
    rss = soak['rss_mb']
    base = rss[int(len(rss) * args.warmup_fraction)]
    growth = 100.0 * (rss[-1] - base) / base
    d = soak['diagnostics']
    outputs = max(soak['received'].values())
    rows = [
        ('frames published (measured)', f"{soak['sent']} at {rate:.1f} Hz"),
        ('outputs received', f"{outputs} ({soak['fps']:.1f} FPS)"),
        ('processing rate (output FPS with a 30 Hz camera)', f"{calm['fps']:.1f} FPS"),
        ('input rate / output rate during the soak', f"{rate / soak['fps']:.2f}"),
        ('output age p50 / p95 / max', f"{soak['p50_ms']:.0f} / {soak['p95_ms']:.0f} / "
                                       f"{soak['max_ms']:.0f} ms"),
        ('bound: 2 input periods + processing under load',
         f"{2e3 / rate + 1e3 / soak['fps']:.0f} ms"),
        ('node CPU', f"{soak['cpu_percent']:.0f} % (100 % = one core)"),
        ('RSS after warm-up / end', f'{base:.0f} / {rss[-1]:.0f} MB'),
        ('RSS growth after warm-up', f'{growth:+.2f} % (target < 5 %)'),
        *((f'counter {k}', d.get(k, '0')) for k in COUNTERS),
        ('node alive at the end', 'yes' if alive else 'NO'),
        ('exit code on SIGTERM', str(code)),
        ('wall time', f'{time.time() - started:.0f} s'),
    ]
    text = '\n'.join([
        '# Soak: panoptic_node at twice its processing rate',
        '',
        f'Machine: {machine_description()}.',
        f'Input: {args.width}x{args.height} rendered sim frames (rgb8, sensor-data QoS) from a '
        f'publisher process; outputs panoptic + detections + occupancy recorded by a third '
        f'process; backend {args.backend}.',
        '',
        '| measure | value |', '|---|---|',
        *(f'| {k} | {v} |' for k, v in rows),
        '',
        'RSS samples (MB, every 10 % of the run): ' + ', '.join(
            f'{rss[int(i * (len(rss) - 1) / 10)]:.0f}' for i in range(11)),
        '',
        'Command: `python benchmarks/soak.py ' + ' '.join(sys.argv[1:]) + '`', ''])
    write_result(text, args.out)
    return 0 if alive and code == 0 and growth < 5.0 else 1


if __name__ == '__main__':
    sys.exit(main())
