"""SEDModel (arXiv 2106.06858): shapes and ranges per pooling, the loss as BCE + alpha * MSE, argument errors,
the official two-step attention against numbers worked out by hand, the z-scoring buffers, and
overfitting a tiny synthetic batch where class k is energy in frequency band k."""
import math

import pytest
import torch

from trainers.sed.model import POOLINGS, BoxPool3x3, SEDModel, clip_bce

T, F, C = 32, 16, 3


@pytest.fixture
def one_thread():
    """torch's intra-op threads spin-wait: on a loaded 2-core machine two of them made a 1 s training
    run take 30 s. One thread, as Ray gives a 1-CPU worker."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _band_batch(seed=0, n=8):
    """(log-mel (n, T, F), weak (n, C), frame activity (n, T, C)): clip i holds class k iff bit k of i is
    set, as +2 in mel bins [5k, 5k + 5) over a random run of 8-15 frames."""
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, T, F, generator=g)
    weak = torch.zeros(n, C)
    active = torch.zeros(n, T, C, dtype=torch.bool)
    for i in range(n):
        for k in range(C):
            if (i >> k) & 1:
                on = int(torch.randint(0, T // 2, (1,), generator=g))
                off = on + T // 4 + int(torch.randint(0, T // 4, (1,), generator=g))
                x[i, on:off, 5 * k:5 * k + 5] += 2.0
                weak[i, k], active[i, on:off, k] = 1.0, True
    return x, weak, active


@pytest.mark.parametrize("pooling", POOLINGS)
def test_shapes_and_ranges(pooling):
    torch.manual_seed(0)
    model = SEDModel(C, n_mels=F, width=2, pooling=pooling, n_frames=T)
    x, weak, _ = _band_batch(n=3)
    loss, correct, n = model(x, weak)
    assert loss.shape == () and torch.isfinite(loss) and n == 3 and 0 <= int(correct) <= 3
    clip, frame = model.predict(x)
    assert clip.shape == (3, C) and frame.shape == (3, T, C)
    for p in (clip, frame):
        assert p.min() >= 0 and p.max() <= 1
    assert model.reconstruct(x).shape == (3, T, F)
    if pooling == "two_step":   # the official time attention is Linear(T, T)
        with pytest.raises(ValueError, match="built for 32 frames, got 11"):
            model.predict(x[:, :11])
        return
    # any number of frames: no other layer depends on T
    clip, frame = model.predict(x[:, :11])
    assert clip.shape == (3, C) and frame.shape == (3, 11, C)


def test_loss_is_bce_plus_alpha_mse():
    torch.manual_seed(0)
    x, weak, _ = _band_batch(n=4)
    with_dec = SEDModel(C, n_mels=F, width=2, alpha=0.5, n_frames=T).eval()
    without = SEDModel(C, n_mels=F, width=2, aux_decoder=False, n_frames=T).eval()
    assert without.load_state_dict(with_dec.state_dict(), strict=False).unexpected_keys  # the decoder's
    with torch.no_grad():
        loss_on, loss_off = with_dec(x, weak)[0], without(x, weak)[0]
        clip, _ = with_dec.predict(x)
        p = clip.double()
        bce = -(weak * p.log() + (1 - weak) * (1 - p).log()).mean()
        mse = ((with_dec.reconstruct(x) - x) ** 2).mean()
    assert float(loss_off) == pytest.approx(float(bce), rel=1e-5)
    assert float(loss_on) == pytest.approx(float(bce + 0.5 * mse), rel=1e-5)
    assert float(mse) > 0.01  # so the two differ
    with pytest.raises(RuntimeError, match="aux_decoder=False"):
        without.reconstruct(x)


def test_correct_counts_exact_label_vectors():
    class Fixed(SEDModel):
        def _pool(self, class_map):
            clip = torch.tensor([[0.9, 0.1, 0.6], [0.9, 0.1, 0.4], [0.2, 0.7, 0.8]])
            return clip, torch.zeros(3, C, class_map.shape[2])

    model = Fixed(C, n_mels=F, width=1, aux_decoder=False, n_frames=T)
    weak = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 1, 1]])
    _, correct, n = model(torch.zeros(3, T, F), weak)
    assert (int(correct), n) == (2, 3)


def test_clip_bce_is_finite_at_saturation():
    p = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0, 0.0, 1.0]])
    loss = clip_bce(p, y)
    assert 7.5 < float(loss) < 8.5  # two of four terms at -log(1e-7) = 16.1


@pytest.mark.parametrize("kwargs, match", [
    ({"num_classes": 0}, "num_classes"), ({"num_classes": 2.5}, "num_classes"),
    ({"width": 0}, "width"), ({"n_mels": 0}, "n_mels"),
    ({"alpha": -0.1}, "alpha"), ({"alpha": "x"}, "alpha"), ({"alpha": float("nan")}, "alpha"),
    ({"pooling": "attention"}, "two_step, two_step_scalar, time_attention, average, max"),
    ({"n_frames": None}, "n_frames"), ({"n_frames": 0}, "n_frames"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SEDModel(**{"num_classes": C, "n_frames": T, **kwargs})


def test_official_two_step_attention_by_hand():
    """2 classes, 4 frames, 3 mel bins, weights set by hand; L = ln 3, so sigmoid(k L) = 3^k / (3^k + 1).
    Frequency step: cla = identity, att = bias (0, 0, ln 2) -> weights (1/4, 1/4, 1/2) in every frame;
    frame p = (s0 + s1) / 4 + s2 / 2 with s = sigmoid(class map):
      class 0: bins (0,0,0) (L,L,L) (-L,-L,-L) (0,0,L)     -> p = 1/2, 3/4, 1/4, 5/8
      class 1: bins (L,-L,0) (0,0,-L) (L,L,0) (-L,-L,-L)   -> p = 1/2, 3/8, 5/8, 1/4
    Time step (Linear(4, 4), mixing frames): cla row t = 8L (p[t+1] - p[t]) (cyclic), no bias; att =
    8 ln 2 * identity, so the attention weights are proportional to 2^(8p):
      class 0: cla = L * (2, -4, 3, -1) -> 9/10, 1/82, 27/28, 1/4;  att ~ 16, 64, 4, 32 (sum 116)
      class 1: cla = L * (-1, 2, -3, 2) -> 1/4, 9/10, 1/28, 9/10;   att ~ 16, 8, 32, 4 (sum 60)"""
    L = math.log(3)
    model = SEDModel(2, n_mels=3, width=1, pooling="two_step", n_frames=4, aux_decoder=False)
    shift = torch.roll(torch.eye(4), 1, dims=1) - torch.eye(4)    # row t: +1 at t+1, -1 at t
    with torch.no_grad():
        model.freq_att.cla.weight.copy_(torch.eye(3))
        model.freq_att.cla.bias.zero_()
        model.freq_att.att.weight.zero_()
        model.freq_att.att.bias.copy_(torch.tensor([0.0, 0.0, math.log(2)]))
        model.time_att.cla.weight.copy_(8 * L * shift)
        model.time_att.cla.bias.zero_()
        model.time_att.att.weight.copy_(8 * math.log(2) * torch.eye(4))
        model.time_att.att.bias.zero_()
        class_map = L * torch.tensor([[[0, 0, 0], [1, 1, 1], [-1, -1, -1], [0, 0, 1]],
                                      [[1, -1, 0], [0, 0, -1], [1, 1, 0], [-1, -1, -1]]], dtype=torch.float32)
        clip, frame = model._pool(class_map[None])
    assert frame[0].flatten().tolist() == pytest.approx([1 / 2, 3 / 4, 1 / 4, 5 / 8,      # class 0
                                                         1 / 2, 3 / 8, 5 / 8, 1 / 4], abs=1e-6)  # class 1
    expected = [(16 * 9 / 10 + 64 * 1 / 82 + 4 * 27 / 28 + 32 * 1 / 4) / 116,     # 0.23308...
                (16 * 1 / 4 + 8 * 9 / 10 + 32 * 1 / 28 + 4 * 9 / 10) / 60]        # 0.26571...
    assert clip[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_feature_stats_z_score_and_are_saved():
    """The model z-scores with the training folds' statistics; they are buffers, so a saved state
    dict carries them to scoring."""
    mean, std = torch.linspace(-3, 3, F), torch.linspace(1, 4, F)
    model = SEDModel(C, n_mels=F, width=1, n_frames=T, feature_mean=mean, feature_std=std).eval()
    x = torch.randn(2, T, F)
    assert torch.allclose(model.normalize(x * std + mean), x, atol=1e-5)
    fresh = SEDModel(C, n_mels=F, width=1, n_frames=T).eval()
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert torch.equal(fresh.predict(x)[0], model.predict(x)[0])


def test_wrong_input_shape():
    model = SEDModel(C, n_mels=F, width=1, n_frames=T)
    with pytest.raises(ValueError, match="16 mel bins"):
        model.predict(torch.zeros(2, T, F + 1))


@pytest.mark.parametrize("pooling", POOLINGS)
def test_overfits_band_energy(pooling, one_thread):
    """60 Adam steps: every pooling fits the weak labels; the length-free attentions (and max) also localize,
    the frame activity of a present class being higher inside its active frames than outside (average
    pooling raises whole clips: no localization to check)."""
    torch.manual_seed(0)
    x, weak, active = _band_batch()
    model = SEDModel(C, n_mels=F, width=4, pooling=pooling, n_frames=T)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with torch.no_grad():
        bce0 = float(clip_bce(model.eval().predict(x)[0], weak))
    model.train()
    for _ in range(60):
        loss, correct, _ = model(x, weak)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        clip, frame = model.eval().predict(x)
    bce = float(clip_bce(clip, weak))
    assert bce < 0.5 * bce0 and int(correct) == 8
    inside, outside = frame[active].mean(), frame[~active & weak.bool()[:, None, :]].mean()
    if pooling == "two_step":
        # the official Linear(T, T) may read a class from any frame: it fits, but 60 steps on 8 clips
        # do not make its frame activity localize (measured: lower inside the events than outside)
        assert bce < 0.05
    elif pooling in ("two_step_scalar", "time_attention"):
        assert bce < 0.05 and inside > outside + 0.15
    elif pooling == "max":
        assert inside > outside


def test_kong_front_end_equals_the_official_pipeline():
    """LogMel(style="kong") = log(scipy magnitude spectrogram (Hamming, no detrend) @ librosa mel + 1e-8),
    the official features; 10 s at 32 kHz -> 311 frames."""
    import numpy as np
    from scipy import signal

    from trainers.features import LogMel

    librosa = pytest.importorskip("librosa")
    wave = (0.1 * np.random.default_rng(0).standard_normal(320000)).astype(np.float32)
    _, _, mag = signal.spectrogram(wave, fs=32000, window=np.hamming(2048), nperseg=2048, noverlap=1024,
                                   detrend=False, return_onesided=True, mode="magnitude")
    mel = librosa.filters.mel(sr=32000, n_fft=2048, n_mels=64, fmin=50.0, fmax=16000)
    ours = LogMel(style="kong").logmel(wave)
    assert ours.shape == (311, 64)
    assert np.abs(ours - np.log(mag.T @ mel.T + 1e-8)).max() < 1e-4
    with pytest.raises(ValueError, match="cmn, kong"):
        LogMel(style="hann")


def test_validation_share_is_stable_and_sized():
    from trainers.sed.task import in_val_split

    keys = [f"snr20/mix{i:05d}" for i in range(4000)]
    share = sum(in_val_split(k, 0.1) for k in keys) / len(keys)
    assert 0.08 < share < 0.12
    assert [in_val_split(k, 0.1) for k in keys[:50]] == [in_val_split(k, 0.1) for k in keys[:50]]


def test_box_pool_is_the_official_stride_1_average_pool():
    """The blocks' 3x3 box sum equals nn.AvgPool2d(3, stride=1, padding=1) (zeros counted at the borders),
    values and input gradients; a corner by hand: 4 ones of the 9 taps -> 4/9."""
    x = torch.randn(2, 3, 7, 5, dtype=torch.float64, requires_grad=True)
    ours, ref = BoxPool3x3()(x), torch.nn.AvgPool2d(3, stride=1, padding=1)(x)
    assert torch.allclose(ours, ref, atol=1e-12)
    w = torch.randn_like(ref)
    (g_ours,), (g_ref,) = torch.autograd.grad((ours * w).sum(), x), torch.autograd.grad((ref * w).sum(), x)
    assert torch.allclose(g_ours, g_ref, atol=1e-12)
    assert BoxPool3x3()(torch.ones(1, 1, 4, 4))[0, 0, 0, 0].item() == pytest.approx(4 / 9)
