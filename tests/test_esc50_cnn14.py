"""The PANNs CNN14 embedding extractor of the ESC-50 workflow (its front end against the reference's, its
checkpoint format, clear refusals) and the refusal of an extractor that saw a test fold. No Ray, no data."""
import numpy as np
import pytest
import torch

from trainers.config import ConfigError, load_config
from trainers.esc50.audio import LogMelCNN, load_extractor
from trainers.esc50.cnn14 import STFT_KEYS, Cnn14
from workflows.esc50_actions import ESC50Config, main, validate


def reference_kernels(n_fft=1024):
    """What audioset_tagging_cnn's STFT conv holds: the DFT matrix exp(-2 pi i x y / n) times a periodic
    Hann window, its first n // 2 + 1 columns as (out, 1, n) real and imaginary kernels."""
    x, y = np.meshgrid(np.arange(n_fft), np.arange(n_fft))
    w = np.power(np.exp(-2j * np.pi / n_fft), x * y)[:, :n_fft // 2 + 1]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    return [torch.tensor(part(w * window[:, None]).T, dtype=torch.float32)[:, None] for part in (np.real, np.imag)]


def checkpoint_state(model: Cnn14) -> dict:
    """The state dict as the published Cnn14_mAP=0.431.pth names it (incl. the STFT conv kernels)."""
    return {**model.state_dict(), **dict(zip(STFT_KEYS, reference_kernels()))}


def test_front_end_equals_the_reference_stft_conv_and_librosa_mel():
    librosa = pytest.importorskip("librosa")
    torch.manual_seed(0)
    wave = 0.1 * torch.randn(2, 32000)
    real, imag = reference_kernels()
    padded = torch.nn.functional.pad(wave[:, None], (512, 512), mode="reflect").double()
    power = (torch.nn.functional.conv1d(padded, real.double(), stride=320) ** 2
             + torch.nn.functional.conv1d(padded, imag.double(), stride=320) ** 2).transpose(1, 2)
    mel_w = torch.tensor(librosa.filters.mel(sr=32000, n_fft=1024, n_mels=64, fmin=50, fmax=14000).T).double()
    expected = 10 * torch.log10(torch.clamp(power @ mel_w, min=1e-10))
    model = Cnn14()
    assert torch.allclose(model.logmel_extractor.melW.double(), mel_w, atol=1e-6)   # torchaudio's Slaney mel
    got = model.logmel(wave)
    assert got.shape == (2, 1, 101, 64)
    assert (got[:, 0].double() - expected).abs().max() < 1e-3                       # dB


def test_loads_the_published_checkpoint_format_and_embeds(tmp_path):
    torch.manual_seed(0)
    model = Cnn14().eval()
    path = tmp_path / "Cnn14_mAP=0.431.pth"
    state = checkpoint_state(model)
    # as the reference's training script saves it: numpy sampler state beside the weights
    torch.save({"iteration": 1, "model": state, "sampler": {"random_state": np.random.RandomState(0).get_state(),
                                                              "pointers": np.arange(5)}}, path)
    extractor = load_extractor("cnn14", str(path))
    wave = 0.1 * torch.randn(1, 48000)                                 # 1.5 s at 32 kHz
    with torch.inference_mode():
        emb = extractor.embed(wave)
        assert emb.shape == (1, 2048) and (emb >= 0).all()             # fc1 after ReLU
        assert torch.allclose(emb, model.embed(wave), atol=1e-5)
    assert extractor.sample_rate == 32000 and extractor.train_folds is None
    # the Ray Data actor: shard WAV bytes (here 16 kHz) resampled to 32 kHz, one clip at a time
    from datasets.audio import encode_wav
    from trainers.esc50.audio import ClipEmbeddings

    wavs = np.array([encode_wav(0.1 * np.random.default_rng(0).standard_normal(n).astype(np.float32), 16000)
                     for n in (16000, 20000)], dtype=object)
    out = ClipEmbeddings("cnn14", str(path))({"key": np.array(["a", "b"], dtype=object), "wav": wavs})
    assert out["embedding"].shape == (2, 2048) and list(out["key"]) == ["a", "b"]

    state["fc_1.weight"] = state.pop("fc1.weight")
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match=r"Cnn14_mAP=0.431.pth does not hold cnn14 weights .*missing keys "
                                         r"\['fc1.weight'\], unexpected keys \['fc_1.weight'\]\); nothing in it "
                                         "was run"):
        load_extractor("cnn14", str(path))
    state["fc1.weight"] = state.pop("fc_1.weight")
    state[STFT_KEYS[0]] = state[STFT_KEYS[0]] * 2
    torch.save({"model": state}, path)
    with pytest.raises(ValueError, match="conv_real.weight is not the 1024-point Hann-window DFT"):
        load_extractor("cnn14", str(path))


def test_a_file_that_is_not_a_state_dict_is_refused_without_running(tmp_path):
    from test_sound_classify import _Planted

    marker, path = tmp_path / "ran", tmp_path / "Cnn14_mAP=0.431.pth"
    torch.save({"model": _Planted(marker)}, path)
    with pytest.raises(ValueError, match=r"Cnn14_mAP=0.431.pth: it is not a plain state dict .*nothing in it was run"):
        load_extractor("cnn14", str(path))
    assert not marker.exists()
    torch.save([torch.zeros(1)], path)
    with pytest.raises(ValueError, match="holds a list, not a state dict; nothing in it was run"):
        load_extractor("cnn14", str(path))


def test_cnn14_needs_32_khz_shards():
    cfg = load_config(ESC50Config, None, ["models=[emb_mlp]", "embedding.kind=cnn14", "embedding.weights=x.pth"])
    with pytest.raises(ConfigError, match="cnn14 takes 32000 Hz audio, but the shards would hold 16000 Hz"):
        validate(cfg)
    with pytest.raises(ConfigError, match="unknown embedding.kind 'vggish'"):
        validate(load_config(ESC50Config, None, ["embedding.kind=vggish"]))


def test_an_extractor_is_refused_for_the_folds_it_was_trained_on(tmp_path, capsys):
    """A model.pt of this project records its training folds (trainers.esc50.folds.record_train_folds)."""
    from trainers.esc50.folds import record_train_folds

    weights = tmp_path / "model.pt"
    torch.save({"run_name": "r", "state": {"model": LogMelCNN(50, width=2).state_dict(), "epoch": 1},
                "history": []}, weights)   # as trainers.loop writes it
    record_train_folds(weights, [5, 2, 3, 4])
    assert torch.load(weights, weights_only=True)["train_folds"] == [2, 3, 4, 5]
    assert load_extractor("logmel_cnn", str(weights)).train_folds == [2, 3, 4, 5]

    ok = load_config(ESC50Config, None, ["models=[emb_mlp]", "test_folds=[1]", f"embedding.weights={weights}"])
    validate(ok)
    code = main(["--model", "emb_mlp,fusion_emb", "--fold", "1,3", "--embedding-weights", str(weights),
                 "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "was trained on ESC-50 folds [2, 3, 4, 5]: it cannot embed test fold(s) [3]" in err
