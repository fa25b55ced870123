"""Front end: kaldi fbank as WeSpeaker, CMN, random 200-frame crops."""
import numpy as np
import pytest
import torch
from torchaudio.compliance import kaldi

from trainers.features import crop_batch, fbank, mean_normalize, random_crop


def _wave(n, seed=0):
    """A voiced-ish test signal: two harmonics plus noise, float32 in [-1, 1]."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    w = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.1 * np.sin(2 * np.pi * 660 * t)
    return (w + 0.01 * rng.standard_normal(n)).astype(np.float32)


@pytest.mark.parametrize("n", [400, 401, 559, 560, 16000, 19744])
def test_fbank_shape(n):
    assert fbank(_wave(n)).shape == (1 + (n - 400) // 160, 80)


def test_fbank_matches_kaldi_called_directly():
    w = _wave(12345)
    expected = kaldi.fbank(torch.from_numpy(w * 32768).unsqueeze(0), num_mel_bins=80,
                           frame_length=25, frame_shift=10, dither=0.0,
                           sample_frequency=16000, window_type="hamming",
                           energy_floor=0.0, use_energy=False)
    got = fbank(w)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, expected, rtol=0, atol=0)
    torch.testing.assert_close(fbank(torch.from_numpy(w)), expected, rtol=0, atol=0)


def test_fbank_no_mean_norm_and_finite():
    f = fbank(_wave(16000))
    assert torch.isfinite(f).all()
    assert f.mean(0).abs().max() > 1.0  # raw log-mel energies, not normalised


def test_feature_crop_equals_fbank_of_wave_crop():
    # Why cropping features is equivalent to WeSpeaker's waveform cropping (snip_edges frames).
    w = _wave(48000)
    start, n = 37, 200
    crop = fbank(w)[start:start + n]
    sub = fbank(w[start * 160: start * 160 + (n - 1) * 160 + 400])
    torch.testing.assert_close(crop, sub, rtol=1e-5, atol=1e-4)


def test_fbank_rejects_bad_input():
    with pytest.raises(ValueError, match="shorter than one"):
        fbank(np.zeros(399, np.float32))
    with pytest.raises(ValueError, match="mono"):
        fbank(np.zeros((2, 16000), np.float32))


def test_mean_normalize_zero_mean_numpy_and_torch():
    f = fbank(_wave(16000))
    torch.testing.assert_close(mean_normalize(f).mean(0), torch.zeros(80), rtol=0, atol=1e-4)
    g = mean_normalize(f.numpy())
    assert isinstance(g, np.ndarray)
    np.testing.assert_allclose(g.mean(0), 0, atol=1e-4)


def test_random_crop_repeat_pads_short_input():
    feats = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    out = random_crop(feats, 20, np.random.default_rng(0))
    assert out.shape == (20, 3)
    np.testing.assert_array_equal(out[:, 0] // 3, [0, 1, 2, 3, 4, 5, 6] * 2 + [0, 1, 2, 3, 4, 5])


def test_random_crop_window_and_determinism():
    feats = np.arange(500, dtype=np.float32)[:, None].repeat(4, 1)
    a = random_crop(feats, 200, np.random.default_rng(7))
    b = random_crop(feats, 200, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)
    assert a.shape == (200, 4)
    np.testing.assert_array_equal(np.diff(a[:, 0]), 1)  # one contiguous window
    starts = {random_crop(feats, 200, np.random.default_rng(s))[0, 0] for s in range(20)}
    assert len(starts) > 1 and min(starts) >= 0 and max(starts) <= 300
    a[0, 0] = -1
    assert feats[0, 0] == 0  # the crop is a copy, not a view into the utterance
    exact = random_crop(feats[:200], 200, np.random.default_rng(1))
    np.testing.assert_array_equal(exact, feats[:200])


def test_random_crop_rejects_empty():
    with pytest.raises(ValueError):
        random_crop(np.zeros((0, 80), np.float32), 200, np.random.default_rng(0))
    with pytest.raises(ValueError):
        random_crop(np.zeros((10, 80), np.float32), 0, np.random.default_rng(0))


def test_crop_batch_shape_cmn_and_determinism():
    utts = [fbank(_wave(n, seed=n)).numpy() for n in (8000, 16000, 40000)]  # 48, 98, 248 frames
    a = crop_batch(utts, 200, np.random.default_rng(3))
    b = crop_batch(utts, 200, np.random.default_rng(3))
    assert a.shape == (3, 200, 80) and a.dtype == np.float32
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a.mean(1), 0, atol=1e-4)  # CMN per crop
    with pytest.raises(ValueError):
        crop_batch([], 200, np.random.default_rng(0))
