"""Benchmark: end to end through ROS 2. Prints a table and writes it to a file.

Three processes, as on a robot: a camera-like publisher (rendered sim frames, wall-clock
stamps, camera_info with each image, sensor-data QoS) -> the node under test -> a recorder
subscribed (reliable) to the node's panoptic, detections and occupancy outputs. For each
camera resolution it runs panoptic_node (the shipped model, --backend) and a pass-through
node (republishes each image, no processing) under the same input rate (and
panoptic_node with overlap_stages on, panoptic_overlap, the fp32 network, panoptic_fp32, or
the network at the size the model was trained at, 320x240 for the shipped model, or at
448x336, panoptic_320 and panoptic_448; the node's default is 384x288), and reports output
FPS, the age of each output (arrival time - image stamp) p50 / p95, the node's CPU (100 % =
one core, from /proc) and RSS, and panoptic_node's own per-stage p50 from /diagnostics.

Usage: python benchmarks/bench_ros.py [--rate 30] [--frames 300] [--backend onnxruntime_int8]
           [--model MODEL]
           [--sizes 640x480 1280x720]
           [--nodes panoptic panoptic_overlap panoptic_fp32 panoptic_320 panoptic_448
                    passthrough]
           [--out benchmarks/results/ros_e2e_cpu.md]
"""

import argparse
from pathlib import Path
import subprocess
import sys
import tempfile

from common import machine_description, write_result
from panoptic_ros.core.health import STAGES
from panoptic_ros.ros.environment import isolated_ros_env, pick_domain_id
from ros_load import run_load


# node under test -> extra parameters of panoptic_node (None: the pass-through node)
NODES = {'panoptic': [], 'panoptic_overlap': ['-p', 'overlap_stages:=true'],
         'panoptic_fp32': ['-p', 'backend:=onnxruntime'],
         'panoptic_320': ['-p', 'input_size:=[320, 240]'],
         'panoptic_448': ['-p', 'input_size:=[448, 336]'], 'passthrough': None}


def node_command(kind, backend, device, cache_dir, model=None):
    if NODES[kind] is None:
        return [sys.executable, str(Path(__file__).resolve().parent / 'ros_load.py'),
                'passthrough']
    return [sys.executable, '-m', 'panoptic_ros.ros.panoptic_node', '--ros-args',
            '-p', f'backend:={backend}', '-p', f'device:={device}',
            '-p', f'cache_dir:={cache_dir}',
            *(['-p', f'model_path:={model}'] if model else []), *NODES[kind]]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--rate', type=float, default=30.0, help='camera rate (Hz)')
    parser.add_argument('--frames', type=int, default=300, help='measured frames per case')
    parser.add_argument('--warmup', type=int, default=20)
    parser.add_argument('--backend', default='onnxruntime_int8')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--model', type=Path, default=None,
                        help="panoptic_node's model_path (default: the shipped model)")
    parser.add_argument('--sizes', nargs='+', default=['640x480', '1280x720'])
    parser.add_argument('--nodes', nargs='+', choices=NODES,
                        default=['panoptic', 'panoptic_fp32', 'passthrough'],
                        help='nodes under test, one after the other at each size')
    parser.add_argument('--out', type=Path, default=Path('benchmarks/results/ros_e2e_cpu.md'))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix='bench_ros_'))
    env = isolated_ros_env(pick_domain_id(), work / 'ros_home')
    rows, stage_rows = [], []
    for size in args.sizes:
        width, height = (int(v) for v in size.split('x'))
        results = {}
        for kind in args.nodes:
            log = open(work / f'{kind}_{size}.log', 'w')
            proc = subprocess.Popen(node_command(kind, args.backend, args.device,
                                                 work / 'cache', args.model),
                                    env=env, stdout=log, stderr=subprocess.STDOUT)
            try:
                r = run_load(proc, env, work / kind, width, height, args.rate, args.frames,
                             kind='passthrough' if NODES[kind] is None else 'panoptic',
                             warmup=args.warmup)
            finally:
                proc.terminate()
                proc.wait(timeout=30)
            results[kind] = r
            received = max(r['received'].values()) if r['received'] else 0
            rows.append(f"| {kind}_node | {size} | {args.rate:.0f} | {r['sent']} | "
                        f"{received} | {r['fps']:.1f} | {r['p50_ms']:.0f} | "
                        f"{r['p95_ms']:.0f} | {r['cpu_percent']:.0f} | "
                        f"{r['rss_mb_end']:.0f} |")
            if NODES[kind] is not None:
                d = r['diagnostics']
                stage_rows.append(f'| {kind}_node | {size} | ' + ' | '.join(
                    d.get(f'{s}_ms_p50', '-') for s in STAGES) +
                    f" | {d.get('dropped_newer_frame', '0')} |")
            print(rows[-1], flush=True)
        q = results.get('passthrough')
        for kind in [k for k in results if NODES[k] is not None and q]:
            p = results[kind]
            rows.append(f"| ratio {kind} / pass-through | {size} | | | | "
                        f"{p['fps'] / q['fps']:.2f} | {p['p50_ms'] / q['p50_ms']:.1f} | "
                        f"{p['p95_ms'] / q['p95_ms']:.1f} | "
                        f"{p['cpu_percent'] / q['cpu_percent']:.1f} | "
                        f"{p['rss_mb_end'] / q['rss_mb_end']:.1f} |")
    text = '\n'.join([
        '# End to end through ROS 2: publisher -> node -> subscriber',
        '',
        f'Machine: {machine_description(args.device)}.',
        f'panoptic_node: {args.model or "shipped model"}, backend {args.backend} on '
        f'{args.device}, outputs '
        'panoptic + detections + occupancy subscribed (overlay and markers not: nobody '
        'subscribed, not computed). Input: rendered sim frames, rgb8, sensor-data QoS, '
        f'{args.warmup} warm-up frames not counted. Age = output arrival - image stamp '
        '(same clock). CPU: the node process only, 100 % = one core.',
        '',
        '| node | camera | input Hz | sent | received | output FPS | age p50 ms | '
        'age p95 ms | CPU % | RSS MB |',
        '|---|---|---|---|---|---|---|---|---|---|',
        *rows,
        '',
        "panoptic_node's own stage latencies (p50 ms, last /diagnostics of the run) and "
        'frames replaced by a newer one before processing:',
        '',
        '| node | camera | ' + ' | '.join(STAGES) + ' | dropped_newer_frame |',
        '|---|---|' + '---|' * (len(STAGES) + 1),
        *stage_rows,
        '',
        'Command: `python benchmarks/bench_ros.py ' + ' '.join(sys.argv[1:]) + '`',
        ''])
    write_result(text, args.out)


if __name__ == '__main__':
    main()
