"""datasets.audio: decoding, mix-down, resampling and the errors that name the bad file."""
import numpy as np
import pytest
import soundfile as sf

from datasets.audio import AudioError, decode_wav, encode_wav, load_audio


def test_stereo_44k_becomes_mono_16k(tmp_path):
    sr = 44100
    t = np.arange(sr) / sr  # 1 s
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.25 * np.sin(2 * np.pi * 440 * t)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), sr, subtype="PCM_16")

    x, info = load_audio(str(path), 16000)
    assert x.dtype == np.float32 and x.ndim == 1
    assert info == {"orig_sr": 44100, "orig_channels": 2, "resampled": True, "mixed_down": True,
                    "num_samples": 16000}
    assert abs(len(x) - 16000) <= 1 and np.abs(x).max() <= 1.0
    # Mean of the channels: amplitude 0.375 survives resampling (440 Hz is far below Nyquist).
    assert np.abs(x[1000:-1000]).max() == pytest.approx(0.375, abs=0.01)


def test_mono_at_target_rate_is_untouched(tmp_path):
    x0 = (np.random.default_rng(0).uniform(-0.5, 0.5, 8000)).astype(np.float32)
    path = tmp_path / "a.flac"
    sf.write(path, x0, 16000, subtype="PCM_16")
    x, info = load_audio(str(path), 16000)
    assert info["resampled"] is False and info["mixed_down"] is False and info["orig_channels"] == 1
    assert np.abs(x - x0).max() < 1e-4


def test_zero_length_file_names_the_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioError, match="zero-length") as exc:
        load_audio(str(path), 16000)
    assert str(path) in str(exc.value)


def test_header_without_samples_names_the_file(tmp_path):
    path = tmp_path / "nosamples.wav"
    sf.write(path, np.zeros((0,), dtype=np.float32), 16000, subtype="PCM_16")
    with pytest.raises(AudioError, match="no samples") as exc:
        load_audio(str(path), 16000)
    assert str(path) in str(exc.value)


def test_corrupt_file_names_the_file(tmp_path):
    path = tmp_path / "corrupt.wav"
    path.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(AudioError, match="corrupt") as exc:
        load_audio(str(path), 16000)
    assert str(path) in str(exc.value) and "delete" in str(exc.value)


def test_nan_content_names_the_file(tmp_path):
    path = tmp_path / "nan.wav"
    x = np.zeros(1600, dtype=np.float32)
    x[100] = np.nan
    sf.write(path, x, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN") as exc:
        load_audio(str(path), 16000)
    assert str(path) in str(exc.value)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="not found"):
        load_audio(str(tmp_path / "nope.wav"), 16000)


def test_m4a_without_ffmpeg_says_how_to_fix(tmp_path, monkeypatch):
    path = tmp_path / "00001.m4a"
    path.write_bytes(b"\x00\x00\x00\x18ftypM4A ")  # never decoded: ffmpeg is "absent"
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(AudioError, match="ffmpeg") as exc:
        load_audio(str(path), 16000)
    assert "apt-get install ffmpeg" in str(exc.value) and str(path) in str(exc.value)


def test_encode_decode_round_trip_and_determinism():
    x = (0.8 * np.sin(np.linspace(0, 200, 12345))).astype(np.float32)
    data = encode_wav(x, 16000)
    assert data == encode_wav(x.copy(), 16000)  # byte-identical: no timestamps in the header
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    y, sr = decode_wav(data)
    assert sr == 16000 and y.dtype == np.float32 and y.shape == x.shape
    assert np.abs(y - x).max() <= 1.0 / 32768 + 1e-6  # 16-bit quantisation only


def test_encode_clips_instead_of_wrapping():
    y, _ = decode_wav(encode_wav(np.array([1.5, -1.5, 0.0], dtype=np.float32), 8000))
    assert y[0] > 0.99 and y[1] == -1.0


def test_decode_garbage_raises_audio_error():
    with pytest.raises(AudioError):
        decode_wav(b"not a wav file at all")
