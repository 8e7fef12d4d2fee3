"""The GPU measurement script (benchmarks/gpu_check.sh) on this machine, so that it does not
fail on its first run on a GPU.

Verifies: the wrapper runs every section at toy sizes on the CPU (--smoke --device cpu) with
exit code 0 and writes the results file with each section and no failed step, the pytest
log beside it, and the CUDA tests collected; asking for CUDA where there is none stops with
exit code 2 and says how to check the script instead. Does not verify: anything on a GPU
(the CUDA-only steps say 'skipped' here), nor the numbers.
"""

import os
from pathlib import Path
import subprocess
import sys

import pytest
import torch

pytestmark = pytest.mark.pipeline
SCRIPT = Path(__file__).resolve().parents[1] / 'benchmarks' / 'gpu_check.sh'


def run_script(*args):
    return subprocess.run(['bash', str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, 'PYTHON': sys.executable})


def test_smoke_run_writes_every_section(tmp_path):
    out = tmp_path / 'results' / 'gpu_check.md'
    run = run_script('--smoke', '--device', 'cpu', '--out', out)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    text = out.read_text()
    for heading in ('## Environment', '## CUDA tests', '## Panoptic head, every policy',
                    '## Shipped model frame pipeline', "## The paper's network"):
        assert heading in text, heading
    assert 'failed' not in text and 'Traceback' not in text, text
    assert 'tests collected' in text and 'Exit code 0' in text
    assert '| refined |' in text and 'End to end, paper network' in text
    assert (out.parent / 'gpu_check_pytest.log').is_file()


@pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has CUDA')
def test_cuda_without_cuda_says_how_to_check_the_script(tmp_path):
    run = run_script('--out', tmp_path / 'x.md')
    assert run.returncode == 2 and '--smoke --device cpu' in run.stderr, run.stderr
