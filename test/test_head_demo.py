"""The interim demo (`make demo`): the panoptic head on its hand-built scene.

Verifies: it runs end to end, writes the montage PNG with one panel per policy, finds the
three cars under the three policies of paper 000 and removes the false person detection.
Does not verify the camera -> node demo (issue 7), which does not exist yet.
"""

import cv2

from panoptic_ros.core.panoptic_head import POLICIES
from panoptic_ros.head_demo import main


def test_head_demo_runs_and_writes_montage(tmp_path, capsys):
    main(['--out', str(tmp_path)])
    printed = capsys.readouterr().out
    image = cv2.imread(str(tmp_path / 'head_demo.png'))
    assert image is not None and image.shape == (2 * 480, 2 * 640, 3)
    for policy in POLICIES:
        assert f'policy {policy}:' in printed
    # Three cars become 3001..3003; the person detection (4th) becomes no segment. Paste
    # (LPSNet) discards the partly hidden middle car: most of the car pixels in its box were
    # already pasted for the two more confident cars (overlap > 0.3).
    assert printed.count('detections -> segment ids: [3001, 3002, 3003, 0]') == \
        len(POLICIES) - 1
    assert 'detections -> segment ids: [3001, 0, 3002, 0]' in printed
