"""What machine a number was measured on (benchmarks and training records)."""

import platform


def _cpuinfo(key):
    """The value of the first /proc/cpuinfo line whose name is `key`, or None."""
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                name, _, value = line.partition(':')
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def cpu_model():
    """The CPU's model name from /proc/cpuinfo, else what platform knows ('x86_64')."""
    return _cpuinfo('model name') or platform.processor() or platform.machine()


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (e.g. 'avx2', 'avx512_vnni'); empty where
    there is none to read."""
    return (_cpuinfo('flags') or '').split()


def vector_extensions():
    """The CPU's vector extensions that choose onnxruntime's int8 kernels, widest first
    ('avx512_vnni, avx512f, avx2'; 'avx2' alone: no VNNI), or 'no avx2'. INT8 results differ
    between machines without and with VNNI, so every benchmark names them."""
    flags = set(cpu_flags())
    found = [f for f in ('avx512_vnni', 'avx_vnni', 'avx512f', 'avx2') if f in flags]
    return ', '.join(found) or 'no avx2'
