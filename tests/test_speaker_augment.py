"""Speaker augmentation (WeSpeaker's VoxCeleb recipe): MUSAN / RIRS_NOISES readers on fixtures in exactly
those layouts, each formula against a hand computation, seeded batches through real Ray Data (a whole
run with every augmentation on: tests/test_reproducible.py)."""
import numpy as np
import pytest
import torch
from conftest import write_augment_sources as make_sources
from conftest import write_wav

from datasets.audio import AudioError
from datasets.augment_sources import SourceLayoutError, musan_files, read_chunk, rir_files
from trainers.speaker.augment import SPEEDS, AugmentConfig, CropAugmenter, add_noise, add_reverb, spec_augment

SR = 16000


def test_readers_follow_the_published_layouts(tmp_path):
    musan, rirs = make_sources(tmp_path)
    found = musan_files(musan)
    assert [k for k, _ in found] == ["noise", "music", "speech"] and all(p.endswith(".wav") for _, p in found)
    assert musan_files(tmp_path) == found                       # the parent folder works too
    assert [p.split("RIRS_NOISES/")[1] for p in rir_files(rirs)] == [
        "simulated_rirs/largeroom/Room001/Room001-00001.wav", "simulated_rirs/smallroom/Room001/Room001-00001.wav"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceLayoutError, match=r"empty/noise/free-sound/\*\.wav.*openslr.org/17"):
        musan_files(tmp_path / "empty")
    with pytest.raises(SourceLayoutError, match=r"simulated_rirs/smallroom/Room001/Room001-00001.wav.*openslr.org/28"):
        rir_files(musan)
    with pytest.raises(SourceLayoutError, match="not found"):
        rir_files(tmp_path / "nowhere")


def test_read_chunk_wraps_short_files_and_resamples(tmp_path):
    x = np.round(np.linspace(-0.5, 0.5, 100) * 32767) / 32767
    write_wav(tmp_path / "a.wav", x)
    rng = np.random.default_rng(0)
    chunk = read_chunk(str(tmp_path / "a.wav"), 250, SR, rng)
    np.testing.assert_allclose(chunk, np.concatenate([x, x, x[:50]]), atol=1e-4)   # repeated from the start
    window = read_chunk(str(tmp_path / "a.wav"), 30, SR, rng)
    start = int(np.argmin(np.abs(x - window[0])))
    np.testing.assert_allclose(window, x[start:start + 30], atol=1e-4)              # a contiguous window
    write_wav(tmp_path / "b.wav", np.sin(2 * np.pi * 100 * np.arange(8000) / 8000), sr=8000)
    assert read_chunk(str(tmp_path / "b.wav"), 1000, SR, rng).shape == (1000,)
    (tmp_path / "junk.wav").write_bytes(b"not audio")
    with pytest.raises(AudioError, match="junk.wav"):
        read_chunk(str(tmp_path / "junk.wav"), 10, SR, rng)


def test_noise_at_the_drawn_snr_by_hand():
    """WeSpeaker: noise scaled by sqrt(10^((dB(x) - dB(n) - snr) / 10)), dB(v) = 10 log10(mean(v^2) + 1e-4)."""
    x, n = np.full(100, 0.1, np.float32), np.full(100, 0.2, np.float32)
    # dB(x) - dB(n) = 10 log10(0.0101 / 0.0401); at 10 dB the gain is sqrt(0.0101 / 0.0401 / 10)
    np.testing.assert_allclose(add_noise(x, n, 10.0), 0.1 + 0.2 * np.sqrt(0.0101 / 0.401), rtol=1e-6)


def test_reverb_by_hand():
    """RIR [3, 4] at unit energy is [0.6, 0.8]; [1, 2, 3] * [0.6, 0.8] = [0.6, 2.0, 3.4, 2.4], cut to 3."""
    np.testing.assert_allclose(add_reverb(np.array([1, 2, 3], np.float32), np.array([3.0, 4.0])), [0.6, 2.0, 3.4],
                               rtol=1e-6)


def test_spec_augment_masks_one_band_each_way():
    feats = np.arange(1, 1 + 50 * 20, dtype=np.float32).reshape(50, 20)
    cfg = AugmentConfig(spec_aug=True, spec_aug_prob=1.0, max_t=10, max_f=8)
    for seed in range(20):
        out = spec_augment(feats, cfg, np.random.default_rng(seed))
        rows = np.flatnonzero((out == 0).all(axis=1))
        cols = np.flatnonzero((out == 0).all(axis=0))
        assert 1 <= len(rows) <= 10 and 1 <= len(cols) <= 8
        assert np.all(np.diff(rows) == 1) and np.all(np.diff(cols) == 1)
        kept = np.ones_like(out, dtype=bool)
        kept[rows] = False
        kept[:, cols] = False
        np.testing.assert_array_equal(out[kept], feats[kept])
    off = AugmentConfig(spec_aug=True, spec_aug_prob=0.0)
    np.testing.assert_array_equal(spec_augment(feats, off, np.random.default_rng(0)), feats)


@pytest.mark.parametrize("index", [1, 2])
def test_speed_perturbation_scales_the_pitch(index):
    """Speed s plays the crop s times faster: a 1 kHz tone comes out at s kHz, still crop_len samples long."""
    crops = CropAugmenter(AugmentConfig(speed_perturb=True), SR, 80, num_frames=200)
    assert crops.crop_len == 199 * 160 + 400
    tone = np.sin(2 * np.pi * 1000 * np.arange(5 * SR) / SR).astype(np.float32)
    out = crops.crop(tone, index, np.random.default_rng(0))
    spectrum = np.abs(np.fft.rfft(out * np.hanning(len(out))))
    peak_hz = np.argmax(spectrum) * SR / len(out)
    assert len(out) == crops.crop_len and abs(peak_hz - 1000 * SPEEDS[index]) < 2


def test_speed_classes_per_utterance_or_per_speaker():
    crops = CropAugmenter(AugmentConfig(speed_perturb=True), SR, 80, num_frames=20)
    labels = np.repeat(np.arange(50), 2)
    per_utt = crops.speed_indices(labels, np.random.default_rng(0), per_label=False)
    per_spk = crops.speed_indices(labels, np.random.default_rng(0), per_label=True)
    assert set(per_utt) == {0, 1, 2} and np.any(per_utt[0::2] != per_utt[1::2])
    assert set(per_spk) == {0, 1, 2} and np.array_equal(per_spk[0::2], per_spk[1::2])
    off = CropAugmenter(AugmentConfig(), SR, 80, num_frames=20)
    assert not off.speed_indices(labels, np.random.default_rng(0), per_label=False).any()


def test_config_refuses_bad_values_and_folders(tmp_path):
    with pytest.raises(ValueError, match="aug_prob"):
        AugmentConfig(aug_prob=1.5).validate()
    with pytest.raises(ValueError, match="max_t"):
        AugmentConfig(max_t=0).validate()
    with pytest.raises(SourceLayoutError, match="musan folder not found"):
        AugmentConfig(musan=str(tmp_path / "nowhere")).validate()


def _task(musan, rirs, pk=None, head="arcface"):
    from trainers.speaker.task import FrontEnd, SpeakerTask

    aug = AugmentConfig(speed_perturb=True, musan=str(musan), rirs=str(rirs), spec_aug=True)
    return SpeakerTask(encoder="tdnn", encoder_args={"hid_dim": 32}, embed_dim=16, head={"name": head},
                       num_classes=3 * 6, front=FrontEnd(), batch_size=6, num_frames=50, shuffle_buffer=8, seed=3,
                       pk=pk, augment=aug)


def test_augmented_batches_are_seeded_through_ray_data(ray_local, tmp_path):
    """Worker batches from a real Ray Data stream: features of num_frames x 80, labels shifted by 6 x speed
    index, the same for the same (seed, epoch, rank) and different for another epoch; P x K batches keep
    each speaker's K utterances one class."""
    import ray

    musan, rirs = make_sources(tmp_path)
    rng = np.random.default_rng(1)
    rows = [{"key": f"u{i}", "wave": (0.1 * rng.standard_normal(SR)).astype(np.float32), "label": i % 6}
            for i in range(24)]
    ds = ray.data.from_items(rows)

    def epoch(task, e):
        return list(task.batches(ds.iterator(), epoch=e, rank=0))

    task = _task(musan, rirs)
    first, again, other = epoch(task, 0), epoch(task, 0), epoch(task, 1)
    assert len(first) == 4 and first[0]["feats"].shape == (6, 50, 80)
    for a, b in zip(first, again):
        assert torch.equal(a["feats"], b["feats"]) and torch.equal(a["label"], b["label"])
    assert not torch.equal(first[0]["feats"], other[0]["feats"])
    labels = torch.cat([b["label"] for b in first + other])
    assert labels.max() < 18 and len(set((labels // 6).tolist())) > 1
    pk = epoch(_task(musan, rirs, pk=2, head="mask_proxy"), 0)
    for b in pk:
        assert torch.equal(b["label"][0::2], b["label"][1::2])
