#!/usr/bin/env python
"""Voice-guided face morphing (arXiv 2107.07988): VoxCeleb1 voices + vox1_meta.csv + VGGFace faces paired by name,
split by identity (names A-E test) -> voice and face shards (Ray Data, the one shard writer) -> a frozen voice
encoder (this project's speaker encoder: loaded from a speaker workflow's model.pt, or trained here on the
training identities' voices) -> a face classifier (the identity loss's, frozen) and, separately, a face
embedder (the retrieval's) -> the guided face autoencoder with its gating controller, one run per lambda, all
through the one Ray Train loop -> face retrieval of morphs on the test identities with the no-voice,
random-voice and unmorphed controls -> results.md, metrics.json, plots/morph_grid.png, plots/training.png.

    python workflows/morph.py --out runs/morph-demo     # demo: a generated paired corpus (datasets/synthetic/morph.py)
    python workflows/morph.py --voices /data/voxceleb1 --faces /data/vggface --meta /data/vox1_meta.csv \\
        --voice-model runs/speaker/model.pt --out runs/morph
    ray job submit --working-dir . -- python workflows/morph.py --out /tmp/morph-job

Keys (also Tune's): loss.lam (lambda: the keep-close weight, the paper's "how much the face must change"),
loss.rec, loss.id, loss.p_same, model.controller (gates | film), eval.lambdas (more lambdas trained for the
grid and the table). docs/morph.md says what is the paper's and what is this project's design.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable without installing the project

from trainers.config import ConfigError  # noqa: E402
from trainers.loop_config import LoopConfig  # noqa: E402
from trainers.resources import ScaleConfig, inference_actors  # noqa: E402
from tuning.target import SweepTarget  # noqa: E402
from workflows import common  # noqa: E402


@dataclasses.dataclass
class DataConfig:
    voice_root: str = ""          # VoxCeleb1 root (wav/ or dev/wav + test/wav); empty: the demo corpus in OUT/data
    face_root: str = ""           # VGGFace root (<name>/<image>.jpg) or VGGFace2 (n000001/ + identity_meta.csv)
    meta: str = ""                # vox1_meta.csv; empty: <voice_root>/vox1_meta.csv
    test_initials: str = "ABCDE"  # names starting with these letters are test identities (the earlier work's split)
    skip_bad: bool = False        # leave unpaired / empty identities and bad files out (listed) instead of failing
    max_utts: int = 0             # > 0: a seeded subset of utterances per identity
    max_images: int = 0           # > 0: a seeded subset of images per identity
    sample_rate: int = 16000
    image_size: int = 64          # faces 64 x 64 RGB, as the earlier voice-to-face work
    samples_per_shard: int = 256


@dataclasses.dataclass
class VoiceConfig:
    model: str = ""               # a speaker workflow's model.pt (its config.yaml beside it); empty: train here
    encoder: str = "tdnn"         # trained here: this project's speaker encoder on the training identities' voices
    encoder_args: dict = dataclasses.field(default_factory=lambda: {"hid_dim": 128, "stats_dim": 256})
    embed_dim: int = 64           # the earlier work's voice embedding size
    num_mel_bins: int = 64        # the earlier work's 64 log-mel bins
    num_frames: int = 200
    head: dict = dataclasses.field(default_factory=lambda: {"name": "softmax"})   # speaker ID, as the earlier work
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(epochs=10, batch_size=32, lr=2e-3,
                                                                            final_lr=2e-4))


@dataclasses.dataclass
class FaceNetConfig:
    width: int = 16               # the identity-loss classifier's FaceCNN width
    embedder_width: int = 24      # the retrieval embedder's (trained separately, seed + 1)
    embed_dim: int = 128
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(epochs=12, batch_size=32, lr=2e-3,
                                                                            final_lr=2e-4))


@dataclasses.dataclass
class ModelConfig:
    controller: str = "gates"     # gates (sigmoid per-channel gates on decoder maps) | film (scale and shift)
    width: int = 16               # the autoencoder's first conv width (doubling to 4 x 4)
    hidden: int = 128             # the controller's hidden layer


@dataclasses.dataclass
class LossConfig:
    rec: float = 1.0              # reconstruction weight (voice and face of the same identity)
    id: float = 0.3               # identity loss weight (frozen classifier, toward the voice's owner)
    lam: float = 1.0              # lambda: keep-close weight (other identity's voice): how much the face may change
    p_same: float = 0.5           # share of training pairs whose voice is the face's own identity's


@dataclasses.dataclass
class EvalConfig:
    lambdas: list = dataclasses.field(default_factory=lambda: [0.1])   # more lambdas trained (grid + table)
    targets: int = 2              # target images per test identity
    voices: int = 2               # utterances per voice owner
    topk: list = dataclasses.field(default_factory=lambda: [1, 5, 10])
    grid_rows: int = 6


@dataclasses.dataclass
class DemoConfig:
    n_train_ids: int = 40
    n_test_ids: int = 12
    sessions: int = 2
    utts_per_session: int = 2
    images_per_id: int = 6
    seed: int = 0


@dataclasses.dataclass
class MorphConfig:
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    voice: VoiceConfig = dataclasses.field(default_factory=VoiceConfig)
    faces: FaceNetConfig = dataclasses.field(default_factory=FaceNetConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    loss: LossConfig = dataclasses.field(default_factory=LossConfig)
    train: LoopConfig = dataclasses.field(default_factory=lambda: LoopConfig(epochs=30, batch_size=16, lr=3e-3,
                                                                            final_lr=3e-4, weight_decay=0.0))
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    demo: DemoConfig = dataclasses.field(default_factory=DemoConfig)
    scale: ScaleConfig = dataclasses.field(default_factory=ScaleConfig)


def validate(cfg: MorphConfig) -> None:
    """Fail on bad names and parameters before any data is read."""
    from trainers.loop import validate as validate_loop
    from trainers.morph.model import CONTROLLERS, MorphAutoencoder

    if cfg.model.controller not in CONTROLLERS:
        raise ConfigError(f"unknown model.controller {cfg.model.controller!r}; choose from {', '.join(CONTROLLERS)}")
    if bool(cfg.data.voice_root) != bool(cfg.data.face_root):
        raise ConfigError("data.voice_root and data.face_root go together (--voices and --faces); give both, or "
                          "neither for the demo corpus")
    if cfg.data.meta and not cfg.data.voice_root:
        raise ConfigError("data.meta is set but data.voice_root is not: --meta needs --voices and --faces")
    if not cfg.data.test_initials.isalpha():
        raise ConfigError(f"data.test_initials must be letters (e.g. ABCDE), got {cfg.data.test_initials!r}")
    common.require_positive(cfg, "data.sample_rate", "data.samples_per_shard", "voice.embed_dim",
                            "voice.num_mel_bins", "voice.num_frames", "faces.width", "faces.embedder_width",
                            "faces.embed_dim", "model.width", "model.hidden", "eval.targets", "eval.voices",
                            "eval.grid_rows")
    for key in ("rec", "id", "lam"):
        if not getattr(cfg.loss, key) >= 0:
            raise ConfigError(f"loss.{key} must be >= 0, got {getattr(cfg.loss, key)!r}")
    if not 0 <= cfg.loss.p_same < 1:
        raise ConfigError(f"loss.p_same must be in [0, 1) (some pairs must cross identities), got {cfg.loss.p_same}")
    if min(cfg.data.max_utts, cfg.data.max_images) < 0:
        raise ConfigError("data.max_utts and data.max_images must be >= 0")
    for key, values in (("lambdas", cfg.eval.lambdas), ("topk", cfg.eval.topk)):
        if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                   and v >= (0 if key == "lambdas" else 1) for v in values):
            raise ConfigError(f"eval.{key} must be a list of numbers ({'>= 0' if key == 'lambdas' else '>= 1'}), "
                              f"got {values!r}")
    if not cfg.eval.topk:
        raise ConfigError("eval.topk must not be empty")
    if cfg.voice.model and not Path(cfg.voice.model).is_file():
        raise ConfigError(f"voice.model {cfg.voice.model} does not exist: pass a speaker workflow's model.pt "
                          "(python workflows/speaker.py --out DIR writes DIR/model.pt)")
    common.checked(lambda: [validate_loop(t) for t in (cfg.train, cfg.voice.train, cfg.faces.train)])
    common.checked(lambda: MorphAutoencoder(8, cfg.model.width, cfg.data.image_size, cfg.model.controller))
    if not cfg.voice.model:
        from trainers.embedding import validate_head_config

        common.checked(lambda: validate_head_config(_VoiceView(cfg), lambda c, num_classes: voice_task(
            cfg, num_classes), "voice"))


class _VoiceView:
    """The voice section in the shape trainers.embedding.validate_head_config reads (head, train, scale)."""

    def __init__(self, cfg: MorphConfig):
        self.head, self.train, self.scale = cfg.voice.head, cfg.voice.train, cfg.scale


def voice_task(cfg: MorphConfig, num_classes: int, encoder: str | None = None, encoder_args: dict | None = None,
               embed_dim: int | None = None, num_mel_bins: int | None = None):
    from trainers.speaker.task import FrontEnd, SpeakerTask

    v = cfg.voice
    return SpeakerTask(encoder=encoder or v.encoder, encoder_args=dict(encoder_args or v.encoder_args),
                       embed_dim=embed_dim or v.embed_dim, head=dict(v.head), num_classes=num_classes,
                       front=FrontEnd(cfg.data.sample_rate, num_mel_bins or v.num_mel_bins),
                       batch_size=v.train.batch_size, num_frames=v.num_frames, shuffle_buffer=128, seed=v.train.seed)


def corpus(cfg: MorphConfig, out: Path, log) -> tuple[Path, Path, Path | None]:
    """(voice root, face root, meta file or None): the user's, or the demo corpus generated in OUT/data."""
    if cfg.data.voice_root:
        return Path(cfg.data.voice_root), Path(cfg.data.face_root), Path(cfg.data.meta) if cfg.data.meta else None
    from datasets.synthetic.morph import generate_morph_corpus

    d = cfg.demo
    root = out / "data"
    log(f"[data] demo: generating a paired corpus in {root} ({d.n_train_ids} training + {d.n_test_ids} test "
        "identities whose gender, size and tone drive both voice and face)")
    generate_morph_corpus(root, n_train_ids=d.n_train_ids, n_test_ids=d.n_test_ids, sessions=d.sessions,
                          utts_per_session=d.utts_per_session, images_per_id=d.images_per_id,
                          image_size=cfg.data.image_size, sample_rate=cfg.data.sample_rate, seed=d.seed)
    return root / "voices", root / "faces", None


def voice_embeddings(cfg: MorphConfig, layout, shards: Path, digests: dict, out: Path, log) -> tuple[dict, dict]:
    """({split: (embeddings (U, D) L2-normalized, labels (U,))}, provenance) from the frozen voice encoder."""
    import numpy as np
    import torch
    import yaml

    from datasets.shards import shard_paths
    from trainers.config import config_hash, to_dict
    from trainers.embedding import encoder_state
    from trainers.loop import check_batches, train_or_reuse
    from trainers.speaker.task import extract_embeddings, feature_dataset

    n_train = len(layout.identities["train"])
    if cfg.voice.model:
        path = Path(cfg.voice.model)
        saved = torch.load(path, map_location="cpu", weights_only=True)
        conf = path.parent / "config.yaml"
        if not isinstance(saved, dict) or "state" not in saved or not conf.is_file():
            raise ConfigError(f"{path} is not a speaker workflow's model.pt with its config.yaml beside it")
        spk = yaml.safe_load(conf.read_text())
        task = voice_task(cfg, 2, spk["model"]["encoder"], spk["model"]["encoder_args"], spk["model"]["embed_dim"],
                          spk["data"]["num_mel_bins"])
        if spk["data"]["sample_rate"] != cfg.data.sample_rate:
            raise ConfigError(f"{path} was trained at {spk['data']['sample_rate']} Hz; set data.sample_rate to match")
        state, source = encoder_state(saved["state"]["model"]), f"speaker workflow model {path}"
        log(f"[voice] frozen encoder from {path} ({spk['model']['encoder']}, {spk['model']['embed_dim']}-d)")
    else:
        task = voice_task(cfg, n_train)
        check_batches(len(layout.voices["train"]), cfg.voice.train, cfg.scale.workers, "training utterances")
        vdir = out / "voice"
        vdir.mkdir(parents=True, exist_ok=True)
        name = f"morph-voice-{config_hash([to_dict(cfg.voice), cfg.data.sample_rate])}-{digests['voice-train'][:8]}"
        paths = shard_paths(shards / "voice-train")
        saved_state, _ = train_or_reuse(task, cfg.voice.train, vdir, name,
                                        lambda: feature_dataset(paths, task.front, shuffle_seed=cfg.voice.train.seed),
                                        cfg.scale, log)
        state, source = encoder_state(saved_state["model"]), f"trained here ({vdir / 'model.pt'})"
    out_sets = {}
    for split in ("train", "test"):
        emb = extract_embeddings(shard_paths(shards / f"voice-{split}"), task, state, inference_actors(cfg.scale),
                                 use_gpu=cfg.scale.use_gpu)
        names = {n: i for i, n in enumerate(layout.identities[split])}
        keys = [v.key for v in layout.voices[split] if v.key in emb]
        e = np.stack([emb[k] for k in keys]).astype(np.float32)
        e /= np.linalg.norm(e, axis=1, keepdims=True) + 1e-12
        labels = np.array([names[v.name] for v in layout.voices[split] if v.key in emb], dtype=np.int64)
        out_sets[split] = (e, labels)
    return out_sets, {"source": source, "embed_dim": int(out_sets["train"][0].shape[1])}


def face_arrays(paths: list) -> tuple:
    """A face shard set back as arrays (images in [-1, 1], labels, keys), in key order."""
    import numpy as np

    from datasets.shards import read_shards
    from trainers.morph.task import face_rows

    parts = [face_rows(b) for b in read_shards(paths, None, ("png", "cls")).iter_batches(batch_size=512,
                                                                                         batch_format="numpy")]
    x, y, k = (np.concatenate(p) for p in zip(*parts))
    order = np.argsort(k)
    return x[order], y[order], k[order]


def train_face_nets(cfg: MorphConfig, paths: list, n_classes: int, tag: str, out: Path, log) -> dict:
    """{"classifier": (task, net), "embedder": (task, net)}: two FaceCNNs trained at once, separately."""
    from datasets.shards import read_shards
    from trainers.config import config_hash, to_dict
    from trainers.loop import train_or_reuse
    from trainers.morph.task import FaceClassifierTask
    from trainers.resources import in_parallel, parallel_runs_scale

    f = cfg.faces
    scale = parallel_runs_scale(cfg.scale, 2, log)
    tasks = {"classifier": FaceClassifierTask(n_classes, f.train.batch_size, f.width, f.embed_dim,
                                              seed=f.train.seed),
             "embedder": FaceClassifierTask(n_classes, f.train.batch_size, f.embedder_width, f.embed_dim,
                                            seed=f.train.seed + 1)}

    def train(which: str):
        task = tasks[which]
        run_dir = out / which
        run_dir.mkdir(parents=True, exist_ok=True)
        name = f"morph-{which}-{config_hash([to_dict(f.train), dataclasses.asdict(task)])}-{tag}"
        state, history = train_or_reuse(task, f.train, run_dir, name, lambda: read_shards(paths, task.seed,
                                                                                          ("png", "cls")),
                                        scale, log)
        net = task.build_net()
        net.load_state_dict({k[len("net."):]: v for k, v in state["model"].items()})
        return task, net.eval(), history

    return in_parallel(train, list(tasks))


def train_morphs(cfg: MorphConfig, paths: list, voices: tuple, classifier, n_classes: int, tag: str, out: Path,
                 log, callbacks=None) -> dict:
    """{lambda: (autoencoder, history)}: one guided autoencoder per lambda (loss.lam first), trained at once."""
    from datasets.shards import read_shards
    from trainers.config import config_hash, to_dict
    from trainers.loop import train_or_reuse
    from trainers.morph.task import MorphTask
    from trainers.resources import in_parallel, parallel_runs_scale

    lams = list(dict.fromkeys([float(cfg.loss.lam), *map(float, cfg.eval.lambdas)]))
    scale = parallel_runs_scale(cfg.scale, len(lams), log)
    clf_task, clf_net = classifier
    state = {k: v.clone() for k, v in clf_net.state_dict().items()}

    def train(lam: float):
        m, loss = cfg.model, cfg.loss
        task = MorphTask(n_classes, voices[0], voices[1], state, cfg.train.batch_size, m.width, m.hidden,
                         m.controller, cfg.data.image_size, clf_task.width, clf_task.embed_dim, loss.rec, loss.id,
                         lam, loss.p_same, seed=cfg.train.seed)
        run_dir = out / "morph" / f"lambda-{lam:g}"
        run_dir.mkdir(parents=True, exist_ok=True)
        name = f"morph-ae-{config_hash([to_dict(cfg.train), to_dict(m), to_dict(loss), lam])}-{tag}"
        saved, history = train_or_reuse(task, cfg.train, run_dir, name,
                                        lambda: read_shards(paths, cfg.train.seed, ("png", "cls")), scale, log,
                                        callbacks=callbacks if lam == float(cfg.loss.lam) else None)
        ae = task.build_autoencoder()
        ae.load_state_dict({k[len("ae."):]: v for k, v in saved["model"].items() if k.startswith("ae.")})
        return ae.eval(), history

    return in_parallel(train, lams)


def results_table(results: dict, topk: list) -> str:
    """One row per lambda x condition: top-k rates (%) of retrieving the voice's owner b and the target a."""
    ks = [int(k) for k in topk]
    head = " | ".join([f"owner b top-{k}" for k in ks] + [f"target a top-{k}" for k in ks])
    lines = [f"| lambda | query | {head} |", "|---|---|" + "---|" * (2 * len(ks))]
    for lam, by_cond in results.items():
        for cond, r in by_cond.items():
            if cond == "chance" and lam != next(iter(results)):
                continue
            cells = " | ".join(f"{100 * r[f'{w}@{k}']:.1f}" for w in ("b", "a") for k in ks)
            lines.append(f"| {lam if cond != 'chance' else '-'} | {cond} | {cells} |")
    return "\n".join(lines)


def run(cfg: MorphConfig, out: Path, *, log=print, callbacks=None) -> dict:
    """The whole job; `callbacks` go to the loss.lam morph run (a Tune sweep passes TuneReportCallback)."""
    import hashlib

    from datasets.morph import build_pair_shards, find_pairs
    from datasets.shards import shard_paths
    from trainers.loop import check_batches
    from trainers.morph.evaluate import queries, retrieval
    from trainers.morph.figures import plot_morph_grid
    from trainers.plots import plot_training_curves
    from trainers.resources import init_ray

    validate(cfg)
    common.clear_stale_results(out, cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    voice_root, face_root, meta = corpus(cfg, out, log)
    d = cfg.data
    layout = find_pairs(voice_root, face_root, meta, test_initials=d.test_initials, skip_bad=d.skip_bad,
                        max_utts=d.max_utts, max_images=d.max_images, seed=cfg.train.seed)
    for line in layout.skipped:
        log(f"[data] skipped {line}")
    for split in ("train", "test"):
        log(f"[data] {split}: {len(layout.identities[split])} identities, {len(layout.voices[split])} utterances, "
            f"{len(layout.faces[split])} face images")
    if layout.unpaired_faces:
        log(f"[data] {layout.unpaired_faces} face folder(s) of names with no VoxCeleb1 voice ignored")
    init_ray(log)

    t0 = time.perf_counter()
    shards = out / "shards"
    build_pair_shards(layout, shards, sample_rate=d.sample_rate, image_size=d.image_size,
                      samples_per_shard=d.samples_per_shard, seed=cfg.train.seed, skip_bad=d.skip_bad,
                      voice_root=voice_root, face_root=face_root)
    manifests, digests = common.verified_shards(shards, ("voice-train", "voice-test", "face-train", "face-test"))
    shard_time = time.perf_counter() - t0
    n_train = len(layout.identities["train"])
    n_faces = manifests["face-train"]["num_samples"]
    for loop in (cfg.faces.train, cfg.train):
        check_batches(n_faces, loop, cfg.scale.workers, "training faces")

    t0 = time.perf_counter()
    voices, voice_info = voice_embeddings(cfg, layout, shards, digests, out, log)
    face_paths = shard_paths(shards / "face-train")
    tag = digests["face-train"][:8]
    nets = train_face_nets(cfg, face_paths, n_train, tag, out, log)
    # the morph runs' names hash the voice embeddings themselves: another voice encoder is another run
    voice_tag = hashlib.sha256(voices["train"][0].tobytes() + voices["train"][1].tobytes()).hexdigest()[:8]
    morphs = train_morphs(cfg, face_paths, voices["train"], nets["classifier"][:2], n_train, f"{tag}-{voice_tag}",
                          out, log, callbacks)
    train_time = time.perf_counter() - t0

    t0 = time.perf_counter()
    faces, face_labels, _ = face_arrays(shard_paths(shards / "face-test"))
    test_voices, test_voice_labels = voices["test"]
    plan = queries(face_labels, test_voice_labels, cfg.eval.targets, cfg.eval.voices, cfg.train.seed)
    embedder = nets["embedder"][1]
    results = {lam: retrieval(ae, embedder, faces, face_labels, test_voices, test_voice_labels, plan,
                              tuple(cfg.eval.topk)) for lam, (ae, _) in morphs.items()}
    k = min(cfg.eval.topk)
    for lam, r in results.items():
        log(f"[morph] lambda {lam:g}: voice owner top-{k} {100 * r['voice'][f'b@{k}']:.1f} % (no voice "
            f"{100 * r['no_voice'][f'b@{k}']:.1f} %, random voice {100 * r['random_voice'][f'b@{k}']:.1f} %, "
            f"chance {100 * r['chance'][f'b@{k}']:.1f} %)")
    eval_time = time.perf_counter() - t0
    history = {f"morph lambda={lam:g}": h for lam, (_, h) in morphs.items()}
    history.update({n: nets[n][2] for n in nets})
    plots = {
        "grid": plot_morph_grid({lam: ae for lam, (ae, _) in morphs.items()}, faces, face_labels, test_voices, plan,
                                layout.identities["test"], cfg.eval.grid_rows, out / "plots" / "morph_grid.png",
                                cfg.train.seed),
        "training": plot_training_curves(history, out / "plots" / "training.png",
                                         title="Morph training loss and identity accuracy; face nets"),
    }
    report = {
        "workflow": "morph",
        "data": {"voice_root": str(voice_root), "face_root": str(face_root),
                 "identities": {s: len(v) for s, v in layout.identities.items()},
                 "utterances": {s: len(v) for s, v in layout.voices.items()},
                 "faces": {s: len(v) for s, v in layout.faces.items()},
                 "skipped": layout.skipped, "unpaired_face_folders": layout.unpaired_faces},
        "shards": common.manifest_summary(manifests, digests),
        "voice_encoder": voice_info,
        "queries": int(len(plan["a"])),
        "results": {f"{lam:g}": r for lam, r in results.items()},
        "history": history,
        "plots": {k: str(v) for k, v in plots.items()},
        "timing_s": {"shards": shard_time, "train": train_time, "evaluate": eval_time},
    }
    table = results_table({f"{lam:g}": r for lam, r in results.items()}, cfg.eval.topk)
    return common.write_report(out, cfg, report, table, ", ".join(map(str, plots.values())), log)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--voices", help="VoxCeleb1 root (wav/idXXXXX/<video>/NNNNN.wav or dev/wav + test/wav)")
    p.add_argument("--faces", help="VGGFace root (<name>/<image>.jpg) or VGGFace2 root (with identity_meta.csv)")
    p.add_argument("--meta", help="vox1_meta.csv (default: in the voices root)")
    p.add_argument("--voice-model", help="a speaker workflow's model.pt (frozen voice encoder)")
    p.add_argument("--skip-bad", action="store_true", help="leave unpaired/empty identities and bad files out")
    p.add_argument("--out", type=Path, default=Path("runs/morph"), help="shards, models, metrics, plots")
    common.add_common_args(p)
    return p.parse_args(argv)


def overrides_of(args: argparse.Namespace) -> list:
    return common.shorthand_overrides(args, common.literal_overrides(**{
        "data.voice_root": args.voices, "data.face_root": args.faces, "data.meta": args.meta,
        "voice.model": args.voice_model, "data.skip_bad": True if args.skip_bad else None}))


def main(argv=None) -> int:
    from trainers.config import load_config

    args = parse_args(argv)
    overrides = overrides_of(args)
    return common.guarded(lambda: run(load_config(MorphConfig, args.config, overrides), args.out), args)


def _final(report: dict) -> dict:
    lam = f"{report['config']['loss']['lam']:g}"
    r = report["results"][lam]
    k = min(report["config"]["eval"]["topk"])
    last = report["history"][f"morph lambda={lam}"][-1]
    return {"owner_top1": r["voice"][f"b@{k}"], "owner_gain": r["voice"][f"b@{k}"] - r["random_voice"][f"b@{k}"],
            "target_top1": r["voice"][f"a@{k}"], "acc": last["acc"]}


def _epochs(cfg: MorphConfig) -> int:
    return cfg.train.epochs


SWEEP = SweepTarget("morph", MorphConfig, run, validate, metric="owner_gain", mode="max", final=_final,
                    overrides=("eval.lambdas=[]",), data_key=None)


if __name__ == "__main__":
    sys.exit(main())
