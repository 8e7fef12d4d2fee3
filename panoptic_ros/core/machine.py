"""What machine a number was measured on (benchmarks and training records)."""

import platform


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what platform knows ('x86_64')."""
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (e.g. 'avx2', 'avx512_vnni'); empty where
    there is none to read."""
    try:
        with open('/proc/cpuinfo') as f:
            return next(line.split(':', 1)[1].split() for line in f
                        if line.startswith('flags'))
    except (OSError, StopIteration):
        return []
