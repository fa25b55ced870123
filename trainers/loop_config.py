"""The one training loop's settings: a plain dataclass without torch, so that every workflow can declare its
config (and answer `--help`) before torch is imported; trainers/loop.py runs them."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class LoopConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"          # adam | sgd
    lr: float = 1e-3
    final_lr: float = 1e-4           # exponential decay from lr to final_lr after warm-up (WeSpeaker style)
    lr_milestones: list = dataclasses.field(default_factory=list)  # if set: step decay (OpenSphere style)
    lr_gamma: float = 0.1            # lr factor at each milestone epoch; final_lr is then unused
    warmup_epochs: int = 0
    weight_decay: float = 1e-5
    momentum: float = 0.9            # sgd only
    nesterov: bool = True            # sgd only
    grad_clip: float = 0.0           # 0 = off
    seed: int = 0
    max_failures: int = 1            # worker failures tolerated (restarts from the latest checkpoint)
    checkpoints_to_keep: int = 2
    # monitor: a metric of the "val" dataset (higher is better). When set, the lr starts at `lr` and is
    # only cut by plateau_factor after plateau_patience epochs without a new best (torch's
    # ReduceLROnPlateau, mode max), and the model of the best epoch is the run's result.
    monitor: str = ""
    plateau_patience: int = 3
    plateau_factor: float = 0.1
    prefetch_batches: int = 8        # batches read ahead in a thread, across epoch ends: the next epoch's Ray Data
                                     # start overlaps this epoch's last steps (trainers/epoch_prefetch.py); 0 = off
    log_every_steps: int = 100       # rank 0 prints a progress line every N steps inside an epoch (WeSpeaker's
                                     # log_batch_interval); 0 = epoch lines only
    monitor_lr: bool = True          # False: train.monitor only picks the best epoch's model; the lr follows the
                                     # schedule above (step milestones or decay), not the plateau
