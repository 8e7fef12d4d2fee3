"""Health of the pipeline: rolling stage latencies, event counters and the diagnostics rule.

ROS-free: the node fills a `StageStats`, `health_values` gives the key/value pairs it
publishes and `diagnostics_level` the level and message (the one rule for OK / WARN / ERROR).
"""

import collections
import threading
import time

import numpy as np

OK, WARN, ERROR = 'OK', 'WARN', 'ERROR'
# Per-frame stages in pipeline order, named as the diagnostics name them (<stage>_ms_p50).
# grids: fusing a cycle's camera grids and updating the accumulated map, once per cycle.
STAGES = ('convert', 'preprocess', 'network', 'decode', 'head', 'occupancy', 'publish',
          'grids')
RATE_WINDOW = 5.0   # seconds over which input and output rates are counted


class StageStats:
    """Rolling per-stage latencies (seconds), event counters and input / output times
    (monotonic seconds), shared by the executor thread and the worker."""

    def __init__(self, window=200):
        self.latency = {s: collections.deque(maxlen=window) for s in STAGES}
        self.counters = collections.Counter()
        self.inputs = collections.deque(maxlen=window)
        self.outputs = collections.deque(maxlen=window)
        self.lock = threading.Lock()

    def add(self, timings):
        """Record {stage: seconds} of one frame."""
        with self.lock:
            for stage, seconds in timings.items():
                self.latency[stage].append(seconds)

    def count(self, name, n=1):
        with self.lock:
            self.counters[name] += n

    def reset(self, name):
        with self.lock:
            self.counters[name] = 0

    def snapshot(self, now):
        """(counters dict, {stage: [seconds]}, input rate Hz, output rate Hz) at monotonic
        time `now`."""
        with self.lock:
            counters = dict(self.counters)
            latencies = {k: list(v) for k, v in self.latency.items()}
            inputs, outputs = list(self.inputs), list(self.outputs)
        return counters, latencies, rate(inputs, now), rate(outputs, now)


def rate(stamps, now, window=RATE_WINDOW):
    """Events per second among monotonic stamps within `window` seconds before now."""
    return sum(1 for t in stamps if now - t <= window) / window


def health_values(counters, latencies, in_rate, out_rate):
    """Diagnostic key/value pairs (strings): rates, p50 / p95 per stage (ms), counters."""
    values = [('input_rate_hz', f'{in_rate:.2f}'), ('output_rate_hz', f'{out_rate:.2f}')]
    for stage, samples in latencies.items():
        if samples:
            values.append((f'{stage}_ms_p50', f'{np.percentile(samples, 50) * 1e3:.2f}'))
            values.append((f'{stage}_ms_p95', f'{np.percentile(samples, 95) * 1e3:.2f}'))
    return values + [(k, str(v)) for k, v in sorted(counters.items())]


def diagnostics_level(consecutive_failures, in_rate, out_rate, min_output_rate,
                      max_consecutive_failures):
    """(level OK / WARN / ERROR, message).

    ERROR: the last max_consecutive_failures frames or more failed in the pipeline
    (exception, non-finite network output); WARN: images arrive but fewer than
    min_output_rate outputs a second leave; OK otherwise. Bad input and frames nobody
    subscribes to are not failures.
    """
    if consecutive_failures >= max_consecutive_failures:
        return ERROR, f'the last {consecutive_failures} frames failed in the pipeline'
    if in_rate > 0 and out_rate < min_output_rate:
        return WARN, f'output rate {out_rate:.1f} Hz below {min_output_rate}'
    return OK, 'ok' if in_rate > 0 else 'waiting for images'


class ThrottledWarnings:
    """Warnings rate-limited per kind of problem (a key), not per call site as rclpy's
    throttle is: warn(key, text) logs through log(text) at most once per period seconds."""

    def __init__(self, log, clock=time.monotonic):
        self._log, self._clock, self._last = log, clock, {}

    def __call__(self, key, text, period=5.0):
        now = self._clock()
        if now - self._last.get(key, -period) >= period:
            self._last[key] = now
            self._log(text)
