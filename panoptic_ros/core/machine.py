"""What machine a number was measured on (benchmarks and training records)."""

import platform


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what platform knows ('x86_64')."""
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()
