"""FoolHD's config sections, torch-free so that `workflows/foolhd.py --help` and config validation import no torch:
the Kaldi front end of the target (trainers/foolhd/frontend.py) and the per-file attacks (trainers/foolhd/attacks.py),
whose docstrings say what each setting does."""
from __future__ import annotations

import dataclasses

MODES = ("untargeted", "targeted")
BASELINES = ("fgsm", "bim")


@dataclasses.dataclass
class FrontEndConfig:
    sample_rate: int = 8000
    num_ceps: int = 30
    num_mel_bins: int = 30
    low_freq: float = 20.0
    high_freq: float = 4000.0
    frame_length: float = 25.0       # ms
    frame_shift: float = 10.0        # ms
    vad_threshold: float = 5.5
    vad_mean_scale: float = 0.5
    vad_context: int = 2
    vad_proportion: float = 0.12
    cmn_window: int = 301            # frames; 0 = no CMN

    def validate(self) -> None:
        if self.sample_rate <= 0 or self.num_ceps < 1 or self.num_mel_bins < self.num_ceps:
            raise ValueError("front: sample_rate > 0 and 1 <= num_ceps <= num_mel_bins needed, got "
                             f"{self.sample_rate}, {self.num_ceps}, {self.num_mel_bins}")
        if not 0 <= self.low_freq < self.high_freq <= self.sample_rate / 2:
            raise ValueError(f"front: need 0 <= low_freq < high_freq <= sample_rate / 2, got {self.low_freq}, "
                             f"{self.high_freq} at {self.sample_rate} Hz")
        if not 0 < self.vad_proportion < 1 or self.vad_context < 0 or self.cmn_window < 0:
            raise ValueError("front: vad_proportion in (0, 1), vad_context >= 0 and cmn_window >= 0 needed")

    @property
    def frame_samples(self) -> int:
        return int(self.sample_rate * self.frame_length / 1000)


@dataclasses.dataclass
class AttackConfig:
    modes: list = dataclasses.field(default_factory=lambda: list(MODES))
    iterations: int = 500            # untargeted, per file (the official MaxItrs)
    targeted_iterations: int = 1000
    lr: float = 1e-3
    weight_decay: float = 1e-5
    kappa: float = 0.0               # Carlini-Wagner confidence
    channels: int = 64               # the autoencoder's width (the paper's 64)
    dropout: float = 0.001
    fresh_per_file: bool = True      # False: one autoencoder carried over the files (the official loop)
    init: str = "pretrained"         # each file's autoencoder starts from: pretrained (on the training utterances,
                                     # through the one loop, reconstruction loss) | random (seeded per file)
    pretrain_epochs: int = 10
    patience: int = 0                # > 0: stop a file this many iterations after its last kept success (0: all)
    target: str = ""                 # targeted: "" = a random other speaker per file (seeded), else this speaker id
    baselines: list = dataclasses.field(default_factory=lambda: list(BASELINES))
    bim_steps: int = 100             # BIM: steps of eps / 5 (the official repo's)
    max_files: int = 0               # attack this many test files (a seeded choice; 0: all of them)
    seed: int = 0

    def validate(self) -> None:
        bad = [m for m in self.modes if m not in MODES] + [b for b in self.baselines if b not in BASELINES]
        if bad or not self.modes or len(set(self.modes)) != len(self.modes):
            raise ValueError(f"unknown or repeated attack mode {bad or self.modes}; modes from {', '.join(MODES)}, "
                             f"baselines from {', '.join(BASELINES)}")
        if self.baselines and "untargeted" not in self.modes:
            raise ValueError("attack.baselines are matched to FoolHD's untargeted SNR: keep 'untargeted' in "
                             "attack.modes or set attack.baselines to []")
        for key in ("iterations", "targeted_iterations", "channels", "bim_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"attack.{key} must be >= 1, got {getattr(self, key)}")
        if self.init not in ("pretrained", "random"):
            raise ValueError(f"unknown attack.init {self.init!r}; choose pretrained or random")
        if not self.lr > 0 or self.weight_decay < 0 or self.kappa < 0 or self.patience < 0 or self.max_files < 0:
            raise ValueError("attack.lr must be > 0 and attack.weight_decay, kappa, patience, max_files >= 0")
