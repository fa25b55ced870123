#!/usr/bin/env python
"""FoolHD (arXiv 2011.08483): imperceptible adversarial attacks on x-vector speaker identification.
VoxCeleb-layout corpus -> closed-set identification split (same speakers in train and test) -> 8 kHz shard sets
(Ray Data) -> the x-vector TDNN (Kaldi MFCC, energy VAD and sliding CMN inside the model) trained through the one
Ray Train loop, or loaded from a model.pt -> per test file, as Ray tasks: a gated convolutional autoencoder in the
MDCT domain trained on that file against the model (perceptual MFCC-cosine loss + Carlini-Wagner margin),
untargeted and targeted, and the FGSM / BIM baselines at the same SNR -> success rates, identification accuracy
before / after, SNR, PESQ, STOI -> results.md, metrics.json, OUT/adversarial/<method>/, plots/.

    python workflows/foolhd.py --out runs/foolhd-demo           # demo: Debian's TTS voices (else generated voices)
    python workflows/foolhd.py --config workflows/configs/foolhd_voxceleb.yaml --data /data/voxceleb1 --out runs/fh
    python workflows/foolhd.py --data /data/voxceleb1 --model runs/fh/model.pt --out runs/fh-again   # attack only
    ray job submit --working-dir . -- python workflows/foolhd.py --out /tmp/foolhd-job

--data ROOT: VoxCeleb layout (wav/idXXXXX/<video>/NNNNN.wav, or dev/ and test/); iden_split.txt there sets the split
(else one held-out video per speaker). Keys (also Tune's): attack.iterations / targeted_iterations / channels /
kappa / fresh_per_file / target / max_files, model.width, front.* (the Kaldi front end), train.*.
The defaults are the paper's attack (500 / 1000 iterations, 64 channels, every test file) and x-vector; the demo
section (data.root empty) shrinks both to fit 5 minutes on 2 CPUs (docs/foolhd.md).
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError, config_hash  # noqa: E402
from trainers.foolhd.config import AttackConfig, FrontEndConfig  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig  # noqa: E402
from workflows import common  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class DataConfig:
    root: str = ""                 # VoxCeleb-layout root (--data); empty: the demo corpus
    crop_seconds: float = 3.0      # training crops
    samples_per_shard: int = 64
    skip_bad: bool = False         # skip unreadable audio (recorded in the manifest) instead of failing


@dataclasses.dataclass
class ModelConfig:
    load: str = ""                 # a model.pt of this workflow (--model): attack it instead of training
    width: int = 512               # TDNN frame layers
    stats_width: int = 1500
    embed_dim: int = 512           # the x-vector
    hidden: int = 512
    dropout: float = 0.4
    attentive: bool = True         # attentive statistics pooling (the official model's)


@dataclasses.dataclass
class DemoConfig:
    """The demo corpus (data.root empty) and the sizes that make the demo fit 5 minutes on 2 CPUs."""
    source: str = "auto"           # auto (tts when flite/festival/sox are installed, else generated) | tts | generated
    speakers: int = 10
    sessions: int = 3
    utts: int = 3
    seed: int = 0
    width: int = 128               # the demo's x-vector: model.width / stats_width / embed_dim / hidden
    stats_width: int = 384
    dropout: float = 0.0           # 0.4 (the paper's, before every BN) leaves 60 utterances' BN statistics unusable
                                   # at eval time (measured: every test file one class)
    epochs: int = 30
    crop_seconds: float = 2.0
    attack_files: int = 6
    attack_channels: int = 16
    attack_iterations: int = 100
    attack_targeted_iterations: int = 200
    pretrain_epochs: int = 10


@dataclasses.dataclass
class FoolHDConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    front: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    attack: AttackConfig = dataclasses.field(default_factory=AttackConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(
        epochs=30, batch_size=32, optimizer="adam", lr=1e-3, final_lr=1e-4, weight_decay=1e-5))
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def model_kwargs(cfg: FoolHDConfig) -> dict:
    m = cfg.model
    return {"width": m.width, "stats_width": m.stats_width, "embed_dim": m.embed_dim, "hidden": m.hidden,
            "dropout": m.dropout, "attentive": m.attentive}


def validate(cfg: FoolHDConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.foolhd.xvector import build_xvector
    from trainers.loop import validate as validate_loop

    common.require_positive(cfg, "data.crop_seconds", "data.samples_per_shard", "demo.speakers", "demo.sessions",
                            "demo.utts", "demo.width", "demo.stats_width", "demo.epochs", "demo.crop_seconds",
                            "demo.attack_files", "demo.attack_channels", "demo.attack_iterations",
                            "demo.attack_targeted_iterations")
    if cfg.demo.source not in ("auto", "tts", "generated"):
        raise ConfigError(f"unknown demo.source {cfg.demo.source!r}; choose auto, tts or generated")
    if cfg.model.load and not Path(cfg.model.load).is_file():
        raise ConfigError(f"model.load: {cfg.model.load} does not exist (a model.pt written by workflows/foolhd.py)")

    def build():
        cfg.front.validate()
        cfg.attack.validate()
        validate_loop(cfg.train)
        build_xvector(2, cfg.front, **model_kwargs(cfg))

    common.checked(build)


def demo_sized(cfg: FoolHDConfig) -> FoolHDConfig:
    """With data.root empty: the demo's sizes replace the paper's (model, crops, epochs, attack budget, files)."""
    d = cfg.demo
    return dataclasses.replace(
        cfg, data=dataclasses.replace(cfg.data, crop_seconds=d.crop_seconds),
        model=dataclasses.replace(cfg.model, width=d.width, stats_width=d.stats_width, embed_dim=d.width,
                                  hidden=d.width, dropout=d.dropout),
        attack=dataclasses.replace(cfg.attack, channels=d.attack_channels, iterations=d.attack_iterations,
                                   pretrain_epochs=d.pretrain_epochs,
                                   targeted_iterations=d.attack_targeted_iterations,
                                   max_files=cfg.attack.max_files or d.attack_files),
        train=dataclasses.replace(cfg.train, epochs=d.epochs, batch_size=min(cfg.train.batch_size, 16)))


def demo_corpus(cfg: FoolHDConfig, out: Path, log) -> tuple[Path, str]:
    """(root, what it is): Debian's TTS voices through scripts/speaker_voices.py (pitch / tempo / channel varied,
    docs/speaker.md), or the source-filter generator when those tools are missing (or demo.source says so)."""
    import shutil
    import subprocess

    d = cfg.demo
    tools = all(shutil.which(t) for t in ("flite", "festival", "text2wave", "sox"))
    source = d.source if d.source != "auto" else ("tts" if tools else "generated")
    if source == "tts" and not tools:
        raise ConfigError("demo.source tts needs flite, festival (text2wave) and sox on PATH: as root, apt-get install "
                          "flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts sox")
    if d.speakers < 3 or d.sessions * d.utts < 2:
        raise ConfigError("the demo corpus needs demo.speakers >= 3 and demo.sessions x demo.utts >= 2")
    base = out / "data" / f"{source}-{config_hash(d)[:8]}"
    if source == "tts":
        log(f"[data] demo corpus: Debian's TTS voices, {d.speakers} pseudo-speakers (scripts/speaker_voices.py) "
            f"in {base}")
        cmd = [sys.executable, str(ROOT / "scripts" / "speaker_voices.py"), "--out", str(base), "--seed", str(d.seed),
               "--n-train-speakers", str(d.speakers - 2), "--n-test-speakers", "2", "--sessions", str(d.sessions),
               "--utts", str(d.utts), "--n-noise", "0", "--n-music", "0", "--n-speech", "0", "--rooms", "0",
               "--rirs-per-room", "0"]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ConfigError(f"scripts/speaker_voices.py failed: {(proc.stderr or proc.stdout).strip()[-400:]}")
        return base / "voxceleb1", "Debian TTS voices (flite / festival), pitch / tempo / channel varied"
    from datasets.synthetic.speakers import generate_corpus

    log(f"[data] demo corpus: generated source-filter voices, {d.speakers} speakers in {base}")
    return generate_corpus(base, n_train_speakers=d.speakers - 2, n_test_speakers=2, sessions_per_speaker=d.sessions,
                           utts_per_session=d.utts, seed=d.seed), "generated source-filter voices"


def load_model(path: str, num_classes: int, cfg: FoolHDConfig) -> tuple[dict, list]:
    """The x-vector state of a model.pt of this workflow, checked against the configured architecture and classes."""
    import torch

    from trainers.foolhd.xvector import build_xvector

    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        state = saved["state"]["model"]
    except Exception as exc:
        raise ConfigError(f"model.load: {path} is not a model.pt of this project ({type(exc).__name__}: "
                          f"{str(exc)[:200]})") from None
    net = {k[len("net."):]: v for k, v in state.items() if k.startswith("net.")}
    model = build_xvector(num_classes, cfg.front, **model_kwargs(cfg))
    expected = model.state_dict()
    wrong = sorted(set(expected) ^ set(net)) or [k for k in expected if tuple(expected[k].shape) !=
                                                 tuple(net[k].shape)]
    if wrong:
        raise ConfigError(f"model.load: {path} is not an x-vector of this architecture and {num_classes} speakers "
                          f"(first mismatch: {wrong[0]}); set model.* to the architecture it was trained with")
    return net, saved.get("history", [])


def report_table(summary: dict, accuracy: float) -> str:
    def num(v, fmt):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)

    lines = [f"Identification accuracy on the whole test set (clean): {100 * accuracy:.2f} %", "",
             "| method | files | success (%) | accuracy before -> after (%) | SNR (dB) | PESQ | STOI |",
             "|---|---|---|---|---|---|---|"]
    for method, s in summary.items():
        lines.append(f"| {method} | {s['files']} | {num(100 * s['success_rate'], '.1f')} | "
                     f"{num(100 * s['accuracy_before'], '.1f')} -> {num(100 * s['accuracy_after'], '.1f')} | "
                     f"{num(s['snr_db'], '.1f')} | {num(s['pesq'], '.2f')} | {num(s['stoi'], '.3f')} |")
    return "\n".join(lines)


def summarize(records: list[dict], methods: list[str]) -> dict:
    import numpy as np

    def mean(values):
        values = [v for v in values if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None

    out = {}
    for m in methods:
        rows = [(r, r[m]) for r in records if r.get(m)]
        if not rows:
            continue
        out[m] = {"files": len(rows), "success_rate": sum(x["success"] for _, x in rows) / len(rows),
                  "accuracy_before": sum(r["clean_pred"] == r["label"] for r, _ in rows) / len(rows),
                  "accuracy_after": sum(x["pred"] == r["label"] for r, x in rows) / len(rows),
                  "snr_db": mean([x["snr_db"] for _, x in rows]), "pesq": mean([x["pesq"] for _, x in rows]),
                  "stoi": mean([x["stoi"] for _, x in rows]),
                  "pesq_successful": mean([x["pesq"] for _, x in rows if x["success"]])}
    return out


def identification_accuracy(state: dict, num_classes: int, cfg: FoolHDConfig, test: list[dict]) -> float:
    import torch

    from trainers.foolhd.attacks import predict
    from trainers.foolhd.xvector import build_xvector

    model = build_xvector(num_classes, cfg.front, **model_kwargs(cfg))
    model.load_state_dict(state)
    model.eval()
    with torch.no_grad():
        return sum(predict(model, u["wave"]) == u["label"] for u in test) / len(test)


def run(cfg: FoolHDConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; `callbacks` go to the Ray Train run (a Tune sweep would pass TuneReportCallback)."""
    import numpy as np

    from datasets.voxceleb.iden import build_identification_shards, identification_split
    from trainers.foolhd.figures import plot_spectrograms, plot_success_pesq
    from trainers.foolhd.parallel import fingerprint_of, model_digest, run_attacks
    from trainers.foolhd.task import XVectorTask, read_utterances
    from trainers.loop import check_batches, train_or_reuse
    from trainers.resources import init_ray

    validate(cfg)
    if not cfg.data.root:
        cfg = demo_sized(cfg)
    common.clear_stale_results(out, cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.data.root:
        root, what = Path(cfg.data.root), "VoxCeleb layout"
    else:
        root, what = demo_corpus(cfg, out, log)
    split = identification_split(root, cfg.train.seed)
    speakers = split["speakers"]
    dropped = f", {split['dropped']} test utterances of unseen speakers dropped" if split["dropped"] else ""
    log(f"[data] {root} ({what}): {len(speakers)} speakers, {len(split['train'])} training / {len(split['test'])} "
        f"test utterances ({split['how']}{dropped})")
    fixed_target = None
    if cfg.attack.target and "targeted" in cfg.attack.modes:
        if cfg.attack.target not in speakers:
            raise ConfigError(f"attack.target {cfg.attack.target!r} is not one of the model's {len(speakers)} speakers "
                              f"({', '.join(speakers[:5])}{', ...' if len(speakers) > 5 else ''})")
        fixed_target = speakers.index(cfg.attack.target)
    init_ray(log)

    t0 = time.perf_counter()
    shards = out / "shards"
    build_identification_shards(split, root, shards, sample_rate=cfg.front.sample_rate,
                                samples_per_shard=cfg.data.samples_per_shard, seed=cfg.train.seed,
                                skip_bad=cfg.data.skip_bad, log=log)
    manifests, digests = common.verified_shards(shards, ("train", "test"))
    shard_time = time.perf_counter() - t0
    from datasets.shards import read_shards, shard_paths

    t0 = time.perf_counter()
    num_classes = len(speakers)
    if cfg.model.load:
        state, history = load_model(cfg.model.load, num_classes, cfg)
        log(f"[model] {cfg.model.load}: loaded (training skipped)")
    else:
        task = XVectorTask(num_classes, cfg.front, model_kwargs(cfg), cfg.train.batch_size, cfg.data.crop_seconds,
                           seed=cfg.train.seed)
        check_batches(manifests["train"]["num_samples"], cfg.train, cfg.scale.workers, "training utterances")
        what_trains = {k: dataclasses.asdict(v) for k, v in (("front", cfg.front), ("model", cfg.model),
                                                               ("train", cfg.train))}
        run_name = f"foolhd-{config_hash({**what_trains, 'crop': cfg.data.crop_seconds})}-{digests['train'][:8]}"
        trained, history = train_or_reuse(task, cfg.train, out, run_name,
                                          lambda: read_shards(shard_paths(shards / "train"), cfg.train.seed),
                                          cfg.scale, log, callbacks=callbacks)
        state = {k[len("net."):]: v for k, v in trained["model"].items() if k.startswith("net.")}
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    test = read_utterances(shard_paths(shards / "test"))
    accuracy = identification_accuracy(state, num_classes, cfg, test)
    log(f"[eval] identification accuracy (clean, {len(test)} test utterances): {100 * accuracy:.2f} %")
    files = test
    if cfg.attack.max_files and cfg.attack.max_files < len(test):
        keep = np.sort(np.random.default_rng([cfg.attack.seed, 1]).choice(len(test), cfg.attack.max_files,
                                                                           replace=False))
        files = [test[i] for i in keep]
    gae_state = pretrained_autoencoder(cfg, out, shards, digests, log, callbacks) \
        if cfg.attack.init == "pretrained" else None
    fingerprint = fingerprint_of(cfg.attack, model_digest(state), cfg.front, fixed_target,
                                 model_digest(gae_state) if gae_state is not None else None)
    records = run_attacks(state, num_classes, cfg.front, model_kwargs(cfg), files, cfg.attack, out, fingerprint,
                          fixed_target, log, gae_state)
    attack_time = time.perf_counter() - t0

    methods = cfg.attack.modes + cfg.attack.baselines
    summary = summarize(records, methods)
    plots = _plots(out, files, records, methods, cfg.front.sample_rate, plot_spectrograms, plot_success_pesq)
    report = {
        "workflow": "foolhd",
        "data": {"root": str(root), "source": what, "split": split["how"], "speakers": speakers,
                 "train_utterances": len(split["train"]), "test_utterances": len(split["test"]),
                 "dropped_test_utterances": split["dropped"]},
        "shards": common.manifest_summary(manifests, digests),
        "identification_accuracy": accuracy,
        "attacks": summary,
        "files": [{k: v for k, v in r.items() if k != "fingerprint"} for r in records],
        "history": history,
        "plots": plots,
        "timing_s": {"shards": shard_time, "train": train_time, "attack": attack_time},
    }
    return common.write_report(out, cfg, report, report_table(summary, accuracy), ", ".join(plots.values()), log)


def pretrained_autoencoder(cfg: FoolHDConfig, out: Path, shards: Path, digests: dict, log, callbacks) -> dict:
    """The autoencoder every file's attack starts from (attack.init pretrained): trained to reconstruct crops of the
    training utterances through the one loop, saved as OUT/autoencoder/model.pt and reused by reruns."""
    from datasets.shards import read_shards, shard_paths
    from trainers.foolhd.task import AutoencoderTask
    from trainers.loop import train_or_reuse

    a = cfg.attack
    task = AutoencoderTask(2, cfg.front, {}, cfg.train.batch_size, cfg.data.crop_seconds, seed=cfg.train.seed,
                           channels=a.channels, dropout=a.dropout)
    loop = dataclasses.replace(cfg.train, epochs=a.pretrain_epochs, lr=1e-3, final_lr=1e-4, monitor="",
                               lr_milestones=[], warmup_epochs=0)
    name = f"foolhd-gae-{config_hash({'c': a.channels, 'd': a.dropout, 'e': a.pretrain_epochs, 'crop': cfg.data.crop_seconds, 'seed': cfg.train.seed, 'b': cfg.train.batch_size})}-{digests['train'][:8]}"  # noqa: E501
    log(f"[autoencoder] pretraining the gated autoencoder ({a.channels} channels) on the training utterances")
    trained, history = train_or_reuse(task, loop, out / "autoencoder", name,
                                      lambda: read_shards(shard_paths(shards / "train"), cfg.train.seed), cfg.scale,
                                      log, callbacks=callbacks)
    if history:
        log(f"[autoencoder] relative reconstruction error {history[-1]['loss']:.4f} after {len(history)} epochs")
    return {k[len("gae."):]: v for k, v in trained["model"].items() if k.startswith("gae.")}


def _plots(out: Path, files: list[dict], records: list[dict], methods: list[str], sr: int, spectrograms,
           scatter, examples: int = 3) -> dict:
    from datasets.audio import decode_wav

    shown = []
    for item, record in list(zip(files, records))[:examples]:
        advs = {m: decode_wav((out / record[m]["wav"]).read_bytes())[0] for m in methods if record.get(m)}
        shown.append((item["key"], item["wave"], advs))
    points = {m: [(r[m]["pesq"], r[m]["success"]) for r in records if r.get(m)] for m in methods}
    return {"spectrograms": spectrograms(shown, sr, out / "plots" / "spectrograms.png"),
            "success_vs_pesq": scatter(points, out / "plots" / "success_vs_pesq.png")}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, help="VoxCeleb-layout root; omitted: the demo corpus")
    p.add_argument("--model", type=Path, help="model.load: a model.pt of this workflow to attack (no training)")
    p.add_argument("--out", type=Path, default=Path("runs/foolhd"), help="shards, model, adversarial wavs, metrics")
    common.add_common_args(p)
    p.add_argument("--skip-bad", action="store_true", help="skip unreadable audio files (listed in the manifest)")
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.root": args.data, "model.load": args.model, "data.skip_bad": args.skip_bad or None}))


def main(argv=None) -> int:
    from trainers.config import load_config

    args = parse_args(argv)
    overrides = overrides_of(args)
    return common.guarded(lambda: run(load_config(FoolHDConfig, args.config, overrides), args.out), args)


if __name__ == "__main__":
    sys.exit(main())
