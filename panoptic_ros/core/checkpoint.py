"""Checkpoints: weights in safetensors, architecture and classes as JSON in its metadata.

One file, `<name>.safetensors`: tensors = the model's state dict; header metadata key
`panoptic_ros` = JSON {format, model (ModelConfig.to_dict()), classes [{name, is_thing}],
normalisation, training info}. Nothing is unpickled: safetensors holds raw tensors only.
A checkpoint whose classes or architecture disagree with what the caller expects, or whose
tensors do not fit the architecture, is refused with CheckpointError naming the difference.
"""

import json
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file
import torch

from panoptic_ros.core.model import ModelConfig, SingleShotPanoptic

FORMAT = 'panoptic_ros.checkpoint/1'
METADATA_KEY = 'panoptic_ros'


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used; the message names the file and the reason."""


def save_checkpoint(path, model, info=None):
    """Write `model` (SingleShotPanoptic) and its config to `path` (.safetensors)."""
    config = model.config
    meta = {
        'format': FORMAT,
        'model': config.to_dict(),
        'classes': [{'name': n, 'is_thing': t} for n, t in zip(config.classes, config.is_thing)],
        'normalisation': {'mean': list(config.mean), 'std': list(config.std),
                          'input': 'RGB, 0-255 scaled to 0-1'},
        'info': info or {},
    }
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + '.tmp')
    save_file(state, str(tmp), metadata={METADATA_KEY: json.dumps(meta)})
    tmp.replace(path)


def read_metadata(path):
    """The JSON metadata of a checkpoint (no tensors read)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'model file {path} does not exist')
    try:
        with safe_open(str(path), framework='pt') as f:
            header = f.metadata() or {}
    except Exception as exc:   # safetensors raises its own error types for corrupt headers
        raise CheckpointError(f'model file {path} is not a readable safetensors file '
                              f'(truncated or corrupt?): {exc}') from exc
    if METADATA_KEY not in header:
        raise CheckpointError(f'model file {path} has no {METADATA_KEY!r} metadata: '
                              'not a panoptic_ros checkpoint')
    meta = json.loads(header[METADATA_KEY])
    if meta.get('format') != FORMAT:
        raise CheckpointError(f'model file {path}: format {meta.get("format")!r}, '
                              f'expected {FORMAT!r}')
    return meta


def _mismatch(expected, found):
    """Names and values of the config fields that differ."""
    a, b = expected.to_dict(), found.to_dict()
    return [f'{k}: expected {a[k]!r}, checkpoint has {b[k]!r}' for k in a if a[k] != b[k]]


def load_checkpoint(path, expected=None, device='cpu'):
    """Load a checkpoint; returns (SingleShotPanoptic in eval mode, metadata dict).

    expected: a ModelConfig (or a dict of some of its fields) the checkpoint must match, e.g.
    the classes and encoder a config file asks for; any difference raises CheckpointError.
    """
    path = Path(path)
    meta = read_metadata(path)
    try:
        config = ModelConfig.from_dict(meta['model'])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f'model file {path}: invalid model metadata: {exc}') from exc
    if isinstance(expected, ModelConfig):
        diff = _mismatch(expected, config)
    elif expected:
        found = config.to_dict()
        diff = [f'{k}: expected {v!r}, checkpoint has {found.get(k)!r}'
                for k, v in expected.items()
                if (tuple(v) if isinstance(v, list) else v) != found.get(k)]
    else:
        diff = []
    if diff:
        raise CheckpointError(f'model file {path} does not match the configuration: ' +
                              '; '.join(diff))
    model = SingleShotPanoptic(config)
    wanted = model.state_dict()
    try:
        with safe_open(str(path), framework='pt', device='cpu') as f:
            keys = set(f.keys())
            missing, unexpected = sorted(set(wanted) - keys), sorted(keys - set(wanted))
            if missing or unexpected:
                raise CheckpointError(
                    f'model file {path} does not fit architecture {config.encoder}: '
                    f'{len(missing)} missing tensors (e.g. {missing[:2]}), '
                    f'{len(unexpected)} unexpected (e.g. {unexpected[:2]})')
            state = {}
            for key in wanted:
                tensor = f.get_tensor(key)
                if tensor.shape != wanted[key].shape:
                    raise CheckpointError(
                        f'model file {path}: tensor {key} has shape {tuple(tensor.shape)}, '
                        f'the architecture needs {tuple(wanted[key].shape)}')
                state[key] = tensor
    except CheckpointError:
        raise
    except Exception as exc:
        raise CheckpointError(f'model file {path} cannot be read (truncated or corrupt?): '
                              f'{exc}') from exc
    model.load_state_dict(state)
    return model.eval().to(device), meta


def save_training_state(path, optimizer, scheduler, scaler, step, epoch, history):
    """Optimizer/scheduler state for resume (torch.save of tensors and plain values only;
    read back with weights_only=True)."""
    torch.save({'optimizer': optimizer.state_dict(), 'scheduler': scheduler.state_dict(),
                'scaler': scaler.state_dict() if scaler is not None else None,
                'step': step, 'epoch': epoch, 'history': history}, path)


def load_training_state(path):
    return torch.load(path, map_location='cpu', weights_only=True)


# Model fields a later training stage may switch on: each adds maps to the center branch's
# predictor (new output rows, zero-initialised), nothing else changes shape.
GROWABLE_OUTPUTS = ('borderness_map',)
# Model fields a later stage may switch off (an ablation that retrains without a branch from
# the trained weights): the Pyramid Pooling Module's tensors, or the heatmap's predictor row,
# are left behind.
REMOVABLE_BRANCHES = ('ppm', 'center_heatmap')
# Model fields a later stage may change without touching a weight: the input size (the network
# is fully convolutional; a stage may train at the size the node runs it at).
FREE_FIELDS = ('input_size',)


def center_rows(config):
    """Names of the center branch predictor's output rows, in order."""
    return (['offset_x', 'offset_y'] + ['center_heatmap'] * config.center_heatmap +
            ['borderness_map'] * config.borderness_map)


def load_stage(path, config):
    """A network of `config` initialised from the previous stage's checkpoint at `path`.

    The checkpoint must have the same architecture, except that `config` may change
    FREE_FIELDS (the input size), switch on outputs listed in GROWABLE_OUTPUTS (the center
    branch's predictor then keeps the rows of the earlier maps and the new rows start at
    zero) and switch off REMOVABLE_BRANCHES (their tensors are dropped). CheckpointError
    otherwise.
    """
    previous, _ = load_checkpoint(path)
    old, new = previous.config.to_dict(), config.to_dict()
    diff = [k for k in new if new[k] != old[k]]
    if any(not (k in FREE_FIELDS or k in GROWABLE_OUTPUTS and new[k] or
                k in REMOVABLE_BRANCHES and not new[k]) for k in diff):
        raise CheckpointError(f'model file {path} does not match the configuration: ' +
                              '; '.join(_mismatch(config, previous.config)))
    model = SingleShotPanoptic(config)
    state = model.state_dict()
    old_rows, new_rows = center_rows(previous.config), center_rows(config)
    for key, tensor in previous.state_dict().items():
        if key not in state:   # a branch switched off
            continue
        if key.startswith('center_branch.predictor.') and old_rows != new_rows:
            state[key] = state[key].clone()   # rows by name; a new map's row stays at zero
            for row, name in enumerate(new_rows):
                if name in old_rows:
                    state[key][row] = tensor[old_rows.index(name)]
        elif state[key].shape == tensor.shape:
            state[key] = tensor
        else:
            raise CheckpointError(f'model file {path}: tensor {key} has shape '
                                  f'{tuple(tensor.shape)}, the stage needs '
                                  f'{tuple(state[key].shape)}')
    model.load_state_dict(state)
    return model
