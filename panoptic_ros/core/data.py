"""Training data step: COCO-panoptic-format datasets -> network inputs and training targets.

Reads the layout of the COCO panoptic format (the sim export, COCO panoptic itself, or
Cityscapes converted with cityscapesscripts' `csCreatePanopticImgs`):
  <root>/<images>/<file_name>            RGB image
  <root>/<panoptic>/<file_name>.png      COCO panoptic PNG (id = R + 256 G + 256^2 B)
  <root>/annotations/panoptic_<split>.json
The annotation file's categories define the classes (their order is the semantic-channel
order); crowd segments are ignored.

Images and label images go through the same letterbox transform as inference
(core.transform.Letterbox); the flip and colour jitter act on the resized image before padding.
The zoom (scale augmentation, as Panoptic-DeepLab's random scaling, zooming in only) crops a
random window of the camera image first and resizes it back: objects come closer and are cut
by the image border, as when the robot drives up to them.
"""

import json
from pathlib import Path

import cv2
import numpy as np
import torch

from panoptic_ros.core.model import CENTER_TARGETS, OUTPUT_STRIDE
from panoptic_ros.core.sim.coco import read_panoptic_png
from panoptic_ros.core.transform import Letterbox

IGNORE = 255     # semantic target value of void / crowd pixels


class PanopticTargets:
    """Turns a panoptic id image at network-input size into the training targets.

    categories: the dataset's (their order is the semantic-channel order); center_target:
    'box' (offsets to the box centre, Weber et al.) or 'mass' (to the centre of mass,
    Panoptic-DeepLab); heatmap_sigma: None, or the sigma in input pixels of the center
    heatmap's Gaussians (centred where the offsets point); mask_targets: also the per-pixel
    maps LPSNet's box head trains on (instance_index, borderness).
    """

    def __init__(self, categories, min_box_side=2.0, center_target='box', heatmap_sigma=None,
                 mask_targets=False):
        self.channel = {c['id']: k for k, c in enumerate(categories)}
        things = [c['id'] for c in categories if c['isthing']]
        self.thing_index = {cid: k for k, cid in enumerate(things)}
        self.min_box_side = min_box_side
        if center_target not in CENTER_TARGETS:
            raise ValueError(f'center_target must be one of {CENTER_TARGETS}, got '
                             f'{center_target!r}')
        self.center_target = center_target
        self.heatmap_sigma = heatmap_sigma
        self.mask_targets = mask_targets

    @classmethod
    def for_model(cls, categories, model_config):
        """The targets a model of `model_config` trains on."""
        return cls(categories, center_target=model_config.center_target,
                   heatmap_sigma=model_config.heatmap_sigma if model_config.center_heatmap
                   else None, mask_targets=model_config.box_head == 'lpsnet'
                   or model_config.borderness_map)

    def __call__(self, ids, segments):
        """ids: int [H, W] segment ids (0 = void); segments: [{'id', 'category_id', 'iscrowd'}].

        Returns dict: semantic int64 [H, W] (IGNORE on void/crowd), boxes float [N, 4]
        (x1, y1, x2, y2 input px, pixel-edge convention), labels int64 [N] (detection class),
        center_offsets float [2, H/4, W/4] (dx, dy to the box centre in 1/4-res pixels) and
        center_weights float [H/4, W/4] (1 on thing pixels); with heatmap_sigma also
        center_heatmap float [1, H/4, W/4]: per pixel the largest of the instances' Gaussians
        exp(-d^2 / (2 sigma^2)), d the distance to the centre, 1 at each centre; with
        mask_targets also instance_index int64 [H, W] (the index into boxes of the instance
        a pixel belongs to, -1 elsewhere), borderness float [H, W] (LPSNet's target,
        see `borderness`) and borderness_quarter float [H/4, W/4] (it at the 1/4 samples).
        """
        height, width = ids.shape
        semantic = np.full((height, width), IGNORE, np.int64)
        boxes, labels = [], []
        qh, qw = -(-height // OUTPUT_STRIDE), -(-width // OUTPUT_STRIDE)
        # quarter-res sample at each quarter pixel's centre
        qy = np.minimum((np.arange(qh) + 0.5) * OUTPUT_STRIDE, height - 1).astype(int)
        qx = np.minimum((np.arange(qw) + 0.5) * OUTPUT_STRIDE, width - 1).astype(int)
        ids_q = ids[np.ix_(qy, qx)]
        offsets = np.zeros((2, qh, qw), np.float32)
        weights = np.zeros((qh, qw), np.float32)
        gx = (np.arange(qw) + 0.5)[None, :]
        gy = (np.arange(qh) + 0.5)[:, None]
        heatmap = np.zeros((qh, qw), np.float32)
        instance_index = np.full((height, width), -1, np.int64)
        borderness_map = np.zeros((height, width), np.float32)
        for seg in segments:
            if seg.get('iscrowd', 0) or seg['category_id'] not in self.channel:
                continue
            mask = ids == seg['id']
            semantic[mask] = self.channel[seg['category_id']]
            if seg['category_id'] not in self.thing_index:
                continue
            ys, xs = np.nonzero(mask)
            if len(xs) == 0:
                continue
            box = [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
            if box[2] - box[0] < self.min_box_side or box[3] - box[1] < self.min_box_side:
                continue
            if self.mask_targets:   # the box's window holds the whole mask
                instance_index[mask] = len(boxes)
                window = (slice(box[1], box[3]), slice(box[0], box[2]))
                borderness_map[window][mask[window]] = borderness(mask[window])[mask[window]]
            boxes.append(box)
            labels.append(self.thing_index[seg['category_id']])
            if self.center_target == 'box':
                cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            else:   # pixel centres' mean
                cx, cy = xs.mean() + 0.5, ys.mean() + 0.5
            cx, cy = cx / OUTPUT_STRIDE, cy / OUTPUT_STRIDE          # in 1/4-res pixels
            if self.heatmap_sigma is not None:
                sigma = self.heatmap_sigma / OUTPUT_STRIDE
                gauss = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2 * sigma ** 2))
                np.maximum(heatmap, gauss.astype(np.float32), out=heatmap)
            mq = ids_q == seg['id']
            offsets[0][mq] = np.broadcast_to(cx - gx, (qh, qw))[mq]
            offsets[1][mq] = np.broadcast_to(cy - gy, (qh, qw))[mq]
            weights[mq] = 1.0
        targets = {
            'semantic': torch.from_numpy(semantic),
            'boxes': torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            'labels': torch.tensor(labels, dtype=torch.int64),
            'center_offsets': torch.from_numpy(offsets),
            'center_weights': torch.from_numpy(weights),
        }
        if self.heatmap_sigma is not None:
            targets['center_heatmap'] = torch.from_numpy(heatmap)[None]
        if self.mask_targets:
            targets['instance_index'] = torch.from_numpy(instance_index)
            targets['borderness'] = torch.from_numpy(borderness_map)
            targets['borderness_quarter'] = torch.from_numpy(
                np.ascontiguousarray(borderness_map[np.ix_(qy, qx)]))
        return targets


def borderness(mask):
    """LPSNet's border-ness target of every pixel of a mask (section 3.2, equation 1):
    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)), with l, r the distances from the
    pixel's centre to the left and right edges of the mask in its row and t, b to the top and
    bottom edges in its column (pixels). 1 at the centre of a rectangle, towards 0 at its
    border. mask: bool [H, W]; returns float32 [H, W], 0 outside the mask."""
    h, w = mask.shape
    cols, rows = np.arange(w), np.arange(h)
    any_row, any_col = mask.any(1), mask.any(0)
    left = np.where(any_row, mask.argmax(1), 0)[:, None]               # first mask column
    right = np.where(any_row, w - mask[:, ::-1].argmax(1), 0)[:, None]  # after the last
    top = np.where(any_col, mask.argmax(0), 0)[None, :]
    bottom = np.where(any_col, h - mask[::-1].argmax(0), 0)[None, :]
    x, y = cols[None, :] + 0.5, rows[:, None] + 0.5
    lr = np.minimum(x - left, right - x) / np.maximum(np.maximum(x - left, right - x), 1e-6)
    tb = np.minimum(y - top, bottom - y) / np.maximum(np.maximum(y - top, bottom - y), 1e-6)
    return np.where(mask, np.sqrt(np.clip(lr * tb, 0, 1)), 0).astype(np.float32)


class CocoPanopticDataset(torch.utils.data.Dataset):
    """One split of a COCO-panoptic-format dataset, as network inputs and targets.

    Each item: (image float [3, H, W] normalised, targets dict as PanopticTargets returns,
    plus 'image_id'), for `model_config`'s outputs when given. `flip` = probability of the
    left-right flip (the paper's only augmentation); `color_jitter` = max relative change of
    brightness and contrast; `zoom` = (probability, largest scale): that share of the items is
    zoomed in by a scale drawn uniformly from [1, largest] (`zoom_window`).
    """

    def __init__(self, root, split, input_size, mean, std, flip=0.0, color_jitter=0.0,
                 images_dir=None, panoptic_dir=None, annotation_file=None, seed=0,
                 model_config=None, zoom=(0.0, 1.0)):
        root = Path(root)
        ann_path = Path(annotation_file) if annotation_file else \
            root / 'annotations' / f'panoptic_{split}.json'
        if not ann_path.is_file():
            raise FileNotFoundError(f'annotation file {ann_path} not found')
        data = json.loads(ann_path.read_text())
        self.categories = data['categories']
        self.images_dir = Path(images_dir) if images_dir else root / 'images' / split
        self.panoptic_dir = Path(panoptic_dir) if panoptic_dir else root / 'panoptic' / split
        anns = {a['image_id']: a for a in data['annotations']}
        self.images = [im for im in data['images'] if im['id'] in anns]
        self.annotations = anns
        self.input_size = tuple(input_size)
        self.letterbox = Letterbox(input_size, mean, std)
        self.flip, self.color_jitter = flip, color_jitter
        self.zoom = tuple(zoom)
        if len(self.zoom) != 2 or not 0 <= self.zoom[0] <= 1 or self.zoom[1] < 1:
            raise ValueError(f'zoom {zoom!r}: needs (probability in [0, 1], largest scale >= 1)')
        self.targets = PanopticTargets.for_model(self.categories, model_config) \
            if model_config is not None else PanopticTargets(self.categories)
        self.rng = np.random.default_rng(seed)

    def __len__(self):
        return len(self.images)

    def load(self, index):
        """Raw (rgb uint8 [h, w, 3], ids int32 [h, w], segments_info) of item `index`."""
        info = self.images[index]
        ann = self.annotations[info['id']]
        bgr = cv2.imread(str(self.images_dir / info['file_name']), cv2.IMREAD_COLOR)
        if bgr is None:
            raise FileNotFoundError(f'cannot read image {self.images_dir / info["file_name"]}')
        ids = read_panoptic_png(self.panoptic_dir / ann['file_name'])
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), ids, ann['segments_info']

    def __getitem__(self, index):
        rgb, ids, segments = self.load(index)
        if self.zoom[0] and self.rng.random() < self.zoom[0]:
            scale = self.rng.uniform(1.0, self.zoom[1])
            rgb, ids = zoom_window(rgb, ids, scale, *self.rng.random(2))
        rgb, _ = self.letterbox.resize(rgb)
        ids = self.letterbox.resize_labels(ids)
        if self.flip and self.rng.random() < self.flip:
            rgb, ids = rgb[:, ::-1], ids[:, ::-1]
        if self.color_jitter:
            gain = 1 + self.rng.uniform(-self.color_jitter, self.color_jitter)
            bias = 255 * self.rng.uniform(-self.color_jitter, self.color_jitter) / 2
            rgb = np.clip(rgb.astype(np.float32) * gain + bias, 0, 255).astype(np.uint8)
        targets = self.targets(self.letterbox.pad_labels(np.ascontiguousarray(ids)), segments)
        targets['image_id'] = self.images[index]['id']
        return self.letterbox.to_input(rgb), targets


def zoom_window(rgb, ids, scale, fx, fy):
    """Zoom in by `scale` (>= 1): the window of 1/scale of the image's width and height, its
    top-left corner at fractions (fx, fy) in [0, 1] of the free range, resized back to the
    image's size (bilinear image, nearest-neighbour segment ids)."""
    height, width = ids.shape
    w, h = max(1, round(width / scale)), max(1, round(height / scale))
    x0, y0 = round(fx * (width - w)), round(fy * (height - h))
    window = (slice(y0, y0 + h), slice(x0, x0 + w))
    return (cv2.resize(rgb[window], (width, height), interpolation=cv2.INTER_LINEAR),
            cv2.resize(np.ascontiguousarray(ids[window]).astype(np.int32), (width, height),
                       interpolation=cv2.INTER_NEAREST))


def collate(batch):
    """Stack images; keep per-image targets as a list (box counts differ)."""
    images = torch.stack([image for image, _ in batch])
    return images, [targets for _, targets in batch]
