"""panoptic-ros-train: train the single-shot network from a YAML config.

  panoptic-ros-train --config config/train_sim_light.yaml [--out DIR] [--resume]
                     [--set train.epochs=2 ...]
  torchrun --nproc_per_node=N -m panoptic_ros.train_cli --config ...    (DDP, multi-GPU/node)

Writes to the output folder: last.safetensors + last_state.pt (resume), best.safetensors
(best validation PQ), history.json, curves.png (losses and validation PQ), and, when
`export_to` is set, copies the best checkpoint there with the training record (data,
command, time, hardware, validation scores) in its metadata. A long schedule runs as stages:
`train.init_from: PREVIOUS.safetensors` starts a stage from the previous stage's exported
weights (a fresh optimiser and schedule), and the export keeps every stage's record
(`info['stages']`). AMP runs on CUDA when
`train.amp` is true. See config/train_sim_light.yaml for every key.
"""

import argparse
import copy
from dataclasses import dataclass, field
import functools
import json
import math
import os
from pathlib import Path
import shutil
import sys
import time

import torch
import torch.distributed as dist
from tqdm import tqdm
import yaml

from panoptic_ros.core import efficientnet_lite
from panoptic_ros.core.backends import TorchBackend
from panoptic_ros.core.checkpoint import (
    load_checkpoint, load_stage, load_training_state, read_metadata, save_checkpoint,
    save_training_state)
from panoptic_ros.core.data import CocoPanopticDataset, collate
from panoptic_ros.core.evaluation import evaluate_pipeline, summary_line
from panoptic_ros.core.inference import DecodeConfig, FramePipeline
from panoptic_ros.core.losses import LossWeights, PanopticLoss
from panoptic_ros.core.machine import cpu_model
from panoptic_ros.core.model import (
    load_encoder_weights, mobilenet_v2_imagenet_state_dict, ModelConfig, SingleShotPanoptic)

DEFAULTS = {
    'model': {'encoder': 'mobilenet_v2', 'input_size': [320, 240], 'pretrained': 'imagenet'},
    'data': {'root': None, 'train_split': 'train', 'val_root': None, 'val_split': 'val',
             'flip': 0.5, 'color_jitter': 0.0, 'zoom': [0.0, 1.0]},
    'train': {'epochs': 10, 'batch_size': 8, 'lr': 1e-3, 'weight_decay': 1e-4,
              'betas': [0.9, 0.99], 'lr_decay_epochs': [0.5, 0.71], 'warmup_iters': 100,
              'amp': True, 'workers': 1, 'threads': 0, 'seed': 0,
              'loss_weights': {'detection': 1.0, 'semantic': 1.0, 'center': 0.1,
                               'heatmap': 200.0},
              'val_every_epochs': 1, 'val_images': 50, 'device': 'cpu',
              'freeze_stem': True, 'init_from': None, 'stop_after_epochs': None},
    'out': 'runs/train',
    'export_to': None,
}


def merge(base, override):
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(path, sets=()):
    """The YAML config merged over DEFAULTS, with `section.key=value` overrides."""
    config = merge(DEFAULTS, yaml.safe_load(Path(path).read_text()) or {})
    for item in sets:
        key, _, value = item.partition('=')
        node = config
        *parents, leaf = key.split('.')
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml.safe_load(value)
    unknown = set(config) - set(DEFAULTS)
    if unknown:
        raise ValueError(f'unknown config sections: {sorted(unknown)}')
    for section in ('data', 'train'):
        extra = set(config[section]) - set(DEFAULTS[section])
        if extra:
            raise ValueError(f'unknown keys in {section}: {sorted(extra)}')
    if not config['data']['root']:
        raise ValueError('data.root must name a COCO-panoptic-format dataset folder')
    return config


def model_config_from(config, categories):
    values = {k: v for k, v in config['model'].items() if k != 'pretrained'}
    values['classes'] = [c['name'] for c in categories]
    values['is_thing'] = [bool(c['isthing']) for c in categories]
    return ModelConfig(**values)


def freeze_stem(model):
    """Stop training the encoder up to stride 4 (ImageNet low-level filters; as torchvision's
    detection models do with trainable_layers=3). Returns the number of frozen tensors."""
    body = model.backbone.body
    names = {'resnet50': ('conv1', 'layer1'), 'efficientnet_lite0': ('stem', 'stage1', 'stage2')
             }.get(model.config.encoder, ('0', '1', '2', '3'))
    frozen = 0
    for name in names:
        for p in getattr(body, name).parameters():
            p.requires_grad_(False)
            frozen += 1
    return frozen


def lr_factor(step, total, warmup, decay_fractions):
    """Linear warm-up, then x0.1 at each decay point (fractions of the total steps)."""
    factor = min(1.0, (step + 1) / warmup) if warmup else 1.0
    return factor * 0.1 ** sum(step >= f * total for f in decay_fractions)


def plot_curves(history, path):
    """Losses per logged step and validation PQ per epoch, as one PNG."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, (ax_loss, ax_pq) = plt.subplots(1, 2, figsize=(11, 4))
    steps = [h['step'] for h in history['train']]
    for key in ('total', 'classification', 'bbox_regression', 'semantic', 'center', 'heatmap'):
        if all(key in h for h in history['train']):   # heatmap: only with its branch
            ax_loss.plot(steps, [h[key] for h in history['train']], label=key)
    ax_loss.set_yscale('log')
    ax_loss.set_xlabel('iteration')
    ax_loss.set_title('training losses')
    ax_loss.legend()
    if history['val']:
        epochs = [v['epoch'] for v in history['val']]
        for key in ('pq', 'pq_things', 'pq_stuff', 'miou'):
            ax_pq.plot(epochs, [v[key] for v in history['val']], marker='o', label=key)
        ax_pq.set_xlabel('epoch')
        ax_pq.set_title('validation')
        ax_pq.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def hardware():
    if torch.cuda.is_available():
        return f'{torch.cuda.device_count()}x {torch.cuda.get_device_name(0)}'
    return f'CPU {cpu_model()}, {os.cpu_count()} cores'


def validate(model, config, device, limit):
    """Validation scores of a copy of `model` through the inference pipeline."""
    pipeline = FramePipeline(TorchBackend(copy.deepcopy(model).cpu(), device),
                             DecodeConfig())
    root = config['data']['val_root'] or config['data']['root']
    return evaluate_pipeline(pipeline, root, config['data']['val_split'], limit=limit)


GRAD_CLIP_NORM = 10.0   # max global gradient norm per step
LOG_EVERY = 20          # iterations per logged average of the losses


@dataclass
class Run:
    """Where this process trains: device, and its place in a torchrun (DDP) job."""
    device: torch.device
    rank: int = 0
    world_size: int = 1

    @property
    def distributed(self):
        return self.world_size > 1

    @property
    def main_process(self):
        return self.rank == 0


@dataclass
class Optimisation:
    """What updates the weights: the trained parameters, AdamW, the LR schedule, AMP."""
    params: list
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: object      # torch.amp.GradScaler on CUDA with AMP, else None

    @property
    def use_amp(self):
        return self.scaler is not None

    def step(self, loss):
        """One update: backward (scaled under AMP), gradient clipping, optimiser, schedule."""
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP_NORM)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.params, GRAD_CLIP_NORM)
            self.optimizer.step()
        self.scheduler.step()


@dataclass
class Progress:
    """Where training stands; saved in last_state.pt for --resume."""
    step: int = 0
    epoch: int = 0
    history: dict = field(default_factory=lambda: {'train': [], 'val': []})
    seconds_before: float = 0.0   # training time of the runs before a resume

    @property
    def best_pq(self):
        return max([v['pq'] for v in self.history['val']], default=-1.0)


def start_run(t):
    """The device and, under torchrun, the process group; threads and seed."""
    device = torch.device(t['device'])
    if device.type == 'cuda' and not torch.cuda.is_available():
        raise SystemExit('train.device is cuda but CUDA is not available')
    run = Run(device, int(os.environ.get('RANK', '0')), int(os.environ.get('WORLD_SIZE', '1')))
    if run.distributed:
        dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo')
        if device.type == 'cuda':
            run.device = torch.device('cuda', int(os.environ.get('LOCAL_RANK', '0')))
            torch.cuda.set_device(run.device)
    if t['threads']:
        torch.set_num_threads(t['threads'])
    torch.manual_seed(t['seed'] + run.rank)
    return run


def train_splits(config):
    """data.train_split as a list: one split name, or several trained on together."""
    splits = config['data']['train_split']
    splits = [splits] if isinstance(splits, str) else list(splits)
    if not splits or not all(isinstance(s, str) and s for s in splits):
        raise ValueError(f'data.train_split {splits!r}: needs a split name or a list of them')
    return splits


def build_data(config, run):
    """(model config from the dataset's categories, training dataset, sampler, loader). Several
    train splits (data.train_split a list) are concatenated; they must share the categories."""
    d, t = config['data'], config['train']
    splits = train_splits(config)
    probe = CocoPanopticDataset(d['root'], splits[0], config['model']['input_size'],
                                (0, 0, 0), (1, 1, 1))
    model_config = model_config_from(config, probe.categories)
    parts = [CocoPanopticDataset(d['root'], split, model_config.input_size,
                                 model_config.mean, model_config.std, flip=d['flip'],
                                 color_jitter=d['color_jitter'], zoom=d['zoom'],
                                 seed=t['seed'] + run.rank + 1000 * i,
                                 model_config=model_config)
             for i, split in enumerate(splits)]
    for split, part in zip(splits[1:], parts[1:]):
        if part.categories != probe.categories:
            raise ValueError(f'train split {split!r} has other categories than {splits[0]!r}')
    dataset = parts[0] if len(parts) == 1 else torch.utils.data.ConcatDataset(parts)
    sampler = torch.utils.data.distributed.DistributedSampler(dataset, seed=t['seed']) \
        if run.distributed else torch.utils.data.RandomSampler(
            dataset, generator=torch.Generator().manual_seed(t['seed']))
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=t['batch_size'], sampler=sampler, collate_fn=collate,
        num_workers=t['workers'], drop_last=len(dataset) >= t['batch_size'],
        persistent_workers=t['workers'] > 0)
    return model_config, dataset, sampler, loader


def build_model(config, model_config, resume, out):
    """The network: resumed from OUT/last.safetensors; or, for a training stage, every weight
    from the previous stage's exported checkpoint (train.init_from, same architecture or
    new outputs switched on, checkpoint.load_stage); or
    with pretrained encoder weights."""
    init_from = config['train']['init_from']
    if resume:
        model, _ = load_checkpoint(out / 'last.safetensors', model_config)
        model.train()
    elif init_from:
        model = load_stage(init_from, model_config)
        model.train()
    else:
        model = SingleShotPanoptic(model_config)
        pretrained = config['model'].get('pretrained')
        if pretrained == 'imagenet' and model_config.encoder == 'mobilenet_v2':
            load_encoder_weights(model, mobilenet_v2_imagenet_state_dict())
        elif pretrained == 'imagenet' and model_config.encoder == 'efficientnet_lite0':
            load_encoder_weights(model, efficientnet_lite.imagenet_state_dict())
        elif pretrained == 'imagenet':
            print('resnet50: no ImageNet weights offline; pass model.pretrained: PATH to a '
                  'torchvision resnet50 state dict')
        elif pretrained not in (None, 'none'):
            load_encoder_weights(model, torch.load(pretrained, map_location='cpu',
                                                   weights_only=True))
    if config['train']['freeze_stem']:
        freeze_stem(model)
    return model


def build_optimisation(model, t, total_steps, device):
    """AdamW over the trainable parameters, warm-up + step decay, AMP on CUDA if asked."""
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=t['lr'], weight_decay=t['weight_decay'],
                                  betas=tuple(t['betas']))
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, t['warmup_iters'], t['lr_decay_epochs']))
    scaler = torch.amp.GradScaler('cuda') if t['amp'] and device.type == 'cuda' else None
    return Optimisation(params, optimizer, scheduler, scaler)


def restore_progress(out, optimisation):
    """Progress and optimiser state from OUT/last_state.pt."""
    state = load_training_state(out / 'last_state.pt')
    optimisation.optimizer.load_state_dict(state['optimizer'])
    optimisation.scheduler.load_state_dict(state['scheduler'])
    if optimisation.scaler is not None and state['scaler']:
        optimisation.scaler.load_state_dict(state['scaler'])
    return Progress(state['step'], state['epoch'], state['history'],
                    state['history'].get('seconds', 0.0))


def train_one_epoch(net, criterion, loader, optimisation, run, progress, epochs):
    """One pass over the loader; appends the averaged losses every LOG_EVERY steps."""
    net.train()
    running = {}
    bar = tqdm(loader, desc=f'epoch {progress.epoch + 1}/{epochs}',
               disable=not run.main_process, unit='batch')
    for images, targets in bar:
        images = images.to(run.device, non_blocking=True)
        targets = [{k: v.to(run.device) if torch.is_tensor(v) else v for k, v in tt.items()}
                   for tt in targets]
        with torch.autocast(run.device.type, enabled=optimisation.use_amp):
            outputs = net(images)
        loss, parts = criterion(outputs, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f'loss is {loss.item()} at step {progress.step}: '
                                     'lower train.lr')
        optimisation.step(loss)
        progress.step += 1
        parts['total'] = loss.detach()
        for k, v in parts.items():
            running[k] = running.get(k, 0.0) + float(v)
        running['n'] = running.get('n', 0) + 1
        if run.main_process and progress.step % LOG_EVERY == 0:
            n = running.pop('n')
            progress.history['train'].append({
                'step': progress.step, 'epoch': progress.epoch + 1,
                'lr': optimisation.scheduler.get_last_lr()[0],
                **{k: v / n for k, v in running.items()}})
            running = {}
            bar.set_postfix(loss=f"{progress.history['train'][-1]['total']:.3f}")


def end_epoch(model, config, out, optimisation, progress, device):
    """Main process: save last.*, validate when due (copying a better model to best.*),
    write history.json and curves.png."""
    t = config['train']
    save = functools.partial(save_training_state, out / 'last_state.pt', optimisation.optimizer,
                             optimisation.scheduler, optimisation.scaler)
    save_checkpoint(out / 'last.safetensors', model)
    save(progress.step, progress.epoch, progress.history)
    due = progress.epoch % t['val_every_epochs'] == 0 or progress.epoch == t['epochs']
    if t['val_images'] and due:
        best_pq = progress.best_pq
        scores = validate(model, config, device, t['val_images'])
        pq = scores['pq']
        # plain floats: the history is read back with torch.load(weights_only=True)
        progress.history['val'].append({
            'epoch': progress.epoch, 'step': progress.step, 'pq': float(pq['all']['pq']),
            'pq_things': float(pq['things']['pq']), 'pq_stuff': float(pq['stuff']['pq']),
            'miou': float(scores['miou']), 'box_ap': float(scores['box_ap']['ap'])})
        print(f'epoch {progress.epoch}: validation {summary_line(scores)}', flush=True)
        if pq['all']['pq'] > best_pq:
            shutil.copyfile(out / 'last.safetensors', out / 'best.safetensors')
        save(progress.step, progress.epoch, progress.history)
    (out / 'history.json').write_text(json.dumps(progress.history, indent=1))
    plot_curves(progress.history, out / 'curves.png')


def export_best(config, out, progress, train_images, command):
    """Copy the best checkpoint (else the last) to `export_to` with its training record."""
    history, t = progress.history, config['train']
    best = out / 'best.safetensors'
    source = best if best.is_file() else out / 'last.safetensors'
    model, _ = load_checkpoint(source)
    # the validation record of the exported weights: the best epoch's, or the last one
    chosen = max(history['val'], key=lambda v: v['pq']) if best.is_file() and \
        history['val'] else (history['val'][-1] if history['val'] else None)
    info = {'command': command,
            'data': {k: config['data'][k] for k in ('root', 'train_split')},
            'train_images': train_images, 'epochs': t['epochs'], 'iterations': progress.step,
            'batch_size': t['batch_size'],
            'world_size': int(os.environ.get('WORLD_SIZE', '1')),
            'training_seconds': round(history.get('seconds', 0.0), 1),
            'hardware': hardware(), 'torch': torch.__version__,
            'exported': source.name, 'validation': chosen}
    if t['init_from']:   # a stage: the previous stages' records travel with the weights
        previous = read_metadata(t['init_from'])['info']
        info['stages'] = previous.get('stages', []) + [
            {k: v for k, v in previous.items() if k != 'stages'}]
        info['initialised_from'] = str(t['init_from'])
    save_checkpoint(config['export_to'], model, info)
    print(f'exported {source} to {config["export_to"]}')


def train(config, resume=False, command=''):
    """Train as `config` says (see config/train_sim_light.yaml); returns the history."""
    t = config['train']
    run = start_run(t)
    out = Path(config['out'])
    if run.main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / 'config.yaml').write_text(yaml.safe_dump(config))
    model_config, dataset, sampler, loader = build_data(config, run)
    model = build_model(config, model_config, resume, out).to(run.device)
    criterion = PanopticLoss(model, LossWeights(**t['loss_weights'])).to(run.device)
    optimisation = build_optimisation(model, t, t['epochs'] * len(loader), run.device)
    progress = restore_progress(out, optimisation) if resume else Progress()
    net = torch.nn.parallel.DistributedDataParallel(model) if run.distributed else model
    start = time.perf_counter()

    # stop_after_epochs ends a run early on the schedule of `epochs` (a stage cut to fit)
    while progress.epoch < min(t['epochs'], t['stop_after_epochs'] or t['epochs']):
        if run.distributed:
            sampler.set_epoch(progress.epoch)
        train_one_epoch(net, criterion, loader, optimisation, run, progress, t['epochs'])
        progress.epoch += 1
        progress.history['seconds'] = progress.seconds_before + time.perf_counter() - start
        if run.main_process:
            end_epoch(model, config, out, optimisation, progress, run.device)
    if run.distributed:
        dist.barrier()
        dist.destroy_process_group()
    if run.main_process and config['export_to']:
        export_best(config, out, progress, len(dataset), command)
    return progress.history


def main(argv=None):
    parser = argparse.ArgumentParser(prog='panoptic-ros-train', description=__doc__.split('\n')[0])
    parser.add_argument('--config', type=Path, required=True)
    parser.add_argument('--out', help='output folder (overrides `out`)')
    parser.add_argument('--resume', action='store_true', help='continue from OUT/last.*')
    parser.add_argument('--set', action='append', default=[], metavar='KEY=VALUE',
                        help='override a config value, e.g. train.epochs=2')
    args = parser.parse_args(argv)
    config = load_config(args.config, args.set)
    if args.out:
        config['out'] = args.out
    command = 'panoptic-ros-train ' + ' '.join(argv if argv is not None else sys.argv[1:])
    history = train(config, args.resume, command)
    if history['val']:
        last = history['val'][-1]
        print(f"done: PQ {last['pq']:.1f}, mIoU {last['miou']:.1f}, box AP "
              f"{last['box_ap']:.1f}; {math.ceil(history['seconds'] / 60)} min")


if __name__ == '__main__':
    main()
