"""Stage: preprocess. The one letterbox + normalise transform of training and inference.

An image (h, w) goes into the network input (width, height) by one scale,
min(width / w, height / h), keeping the aspect ratio: resized with OpenCV (area
interpolation when shrinking, linear when growing; nearest for label images), normalised
with the model's mean and std, and padded on the right and bottom with zeros after
normalisation (the mean colour; void 0 for label images). Augmentations act on the resized
image before padding, so a flip never moves the padding.
"""

import cv2
import numpy as np
import torch


def letterbox_scale(image_size, input_size):
    """Scale from an image (h, w) into a network input (width, height), aspect kept."""
    h, w = image_size
    width, height = input_size
    return min(width / w, height / h)


def letterbox_size(image_size, input_size):
    """((new_w, new_h), scale): the resized image inside a (width, height) network input."""
    width, height = input_size
    scale = letterbox_scale(image_size, input_size)
    return (min(width, max(1, int(round(image_size[1] * scale)))),
            min(height, max(1, int(round(image_size[0] * scale))))), scale


class Letterbox:
    """Resize, normalise and pad into the network input.

    Args: input_size (width, height) in pixels; mean, std: per-channel RGB statistics of
    images scaled to [0, 1].
    """

    def __init__(self, input_size, mean, std):
        self.input_size = tuple(input_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def resize(self, rgb):
        """uint8 [h, w, 3] -> (uint8 [new_h, new_w, 3] inside the input, scale)."""
        (new_w, new_h), scale = letterbox_size(rgb.shape[:2], self.input_size)
        if (new_w, new_h) != (rgb.shape[1], rgb.shape[0]):
            interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            rgb = cv2.resize(rgb, (new_w, new_h), interpolation=interpolation)
        return rgb, scale

    def resize_labels(self, labels):
        """Label image [h, w] (any integer dtype) -> [new_h, new_w], nearest neighbour."""
        (new_w, new_h), _ = letterbox_size(labels.shape[:2], self.input_size)
        if (new_w, new_h) == (labels.shape[1], labels.shape[0]):
            return labels
        return cv2.resize(labels, (new_w, new_h), interpolation=cv2.INTER_NEAREST)

    def to_input(self, resized, device='cpu', dtype=torch.float32):
        """uint8 [new_h, new_w, 3] from resize() -> float [3, height, width] on `device`:
        normalised, zero (the mean colour) in the padding."""
        width, height = self.input_size
        new_h, new_w = resized.shape[:2]
        if not resized.flags.writeable or not resized.flags.c_contiguous:
            resized = np.ascontiguousarray(resized).copy()   # torch wants its own buffer
        x = torch.from_numpy(resized).to(device).permute(2, 0, 1).to(dtype)
        mean = torch.tensor(self.mean, device=device, dtype=dtype).view(3, 1, 1) * 255
        inv_std = 1.0 / (torch.tensor(self.std, device=device, dtype=dtype).view(3, 1, 1) * 255)
        padded = torch.zeros((3, height, width), dtype=dtype, device=device)
        padded[:, :new_h, :new_w] = (x - mean) * inv_std
        return padded

    def pad_labels(self, labels, void=0):
        """Label image [new_h, new_w] from resize_labels() -> [height, width], `void` in the
        padding."""
        width, height = self.input_size
        out = np.full((height, width), void, dtype=labels.dtype)
        out[:labels.shape[0], :labels.shape[1]] = labels
        return out
