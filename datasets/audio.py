"""Audio decoding shared by every corpus: file -> mono float32 at the training rate.

soundfile (libsndfile) reads wav/flac/ogg. VoxCeleb2 ships AAC in .m4a, which libsndfile cannot
read, so those go through an `ffmpeg` subprocess; without ffmpeg the error says how to fix it.
Every failure is an `AudioError` that names the file, so a bad item in a 1M-file corpus can be
found and removed instead of surfacing as a shape error deep inside training.
"""
from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess

import numpy as np
import soundfile as sf

FFMPEG_SUFFIXES = (".m4a", ".aac", ".mp4")


class AudioError(ValueError):
    """An audio file could not be turned into samples; the message names the file and the fix."""


def load_audio(path: str, target_sr: int) -> tuple[np.ndarray, dict]:
    """Decode `path` to mono float32 in [-1, 1] at `target_sr`.

    Returns (samples, info) with info = {orig_sr, orig_channels, resampled, mixed_down,
    num_samples}. For ffmpeg-decoded files (.m4a/.aac/.mp4) ffmpeg itself mixes down and
    resamples, so info describes ffmpeg's output (orig_sr == target_sr, one channel).
    """
    path = str(path)
    if int(target_sr) <= 0:
        raise ValueError(f"target_sr must be a positive integer, got {target_sr!r}")
    target_sr = int(target_sr)
    if not os.path.isfile(path):
        raise AudioError(f"audio file not found: {path}: check the corpus root and list files")
    if os.path.getsize(path) == 0:
        raise AudioError(f"zero-length audio file: {path}: re-download or delete it (and drop it from the lists)")

    if path.lower().endswith(FFMPEG_SUFFIXES):
        data, sr = _read_with_ffmpeg(path, target_sr)
    else:
        try:
            data, sr = sf.read(path, dtype="float32", always_2d=True)
        except Exception as exc:  # libsndfile raises LibsndfileError/RuntimeError/TypeError for junk
            raise AudioError(f"unreadable or corrupt audio file: {path}: {exc}; re-download or delete it") from None

    orig_channels = int(data.shape[1])
    if data.shape[0] == 0:
        raise AudioError(f"audio file has no samples: {path}: re-download or delete it")
    if not np.isfinite(data).all():
        raise AudioError(f"audio file contains NaN/Inf samples: {path}: re-encode or delete it")

    # Mean, not first channel: keeps both speakers' energy if a recording is split across channels.
    mono = data.mean(axis=1, dtype=np.float32) if orig_channels > 1 else data[:, 0]
    resampled = int(sr) != target_sr
    if resampled:
        import torch
        import torchaudio.functional as AF  # lazy: keeps `import datasets.audio` light for workers

        mono = AF.resample(torch.from_numpy(np.ascontiguousarray(mono)), int(sr), target_sr).numpy()
    # Float files and resampling overshoot can exceed full scale; the contract is [-1, 1].
    mono = np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)
    info = {
        "orig_sr": int(sr),
        "orig_channels": orig_channels,
        "resampled": bool(resampled),
        "mixed_down": orig_channels > 1,
        "num_samples": int(mono.shape[0]),
    }
    return mono, info


def _read_with_ffmpeg(path: str, target_sr: int) -> tuple[np.ndarray, int]:
    if shutil.which("ffmpeg") is None:
        raise AudioError(
            "VoxCeleb2 m4a needs ffmpeg: install it (apt-get install ffmpeg) or convert the m4a "
            f"files to wav first: {path}"
        )
    cmd = ["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "wav", "-ac", "1", "-ar", str(target_sr), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        err = proc.stderr.decode("utf-8", "replace").strip()[-500:]
        raise AudioError(f"ffmpeg could not decode {path} (exit {proc.returncode}): {err}; re-download or delete it")
    try:
        return _parse_piped_wav(proc.stdout)
    except ValueError as exc:
        raise AudioError(f"ffmpeg produced unreadable output for {path}: {exc}") from None


def _parse_piped_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Minimal RIFF reader for ffmpeg's piped WAV, whose size fields are placeholders (the
    muxer cannot seek back on a pipe), so the data chunk is taken to run to the end."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise ValueError("not a RIFF/WAVE stream")
    pos, fmt = 12, None
    while pos + 8 <= len(data):
        cid, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        body = pos + 8
        if cid == b"fmt ":
            tag, channels, sr = struct.unpack("<HHI", data[body:body + 8])
            bits = struct.unpack("<H", data[body + 14:body + 16])[0]
            fmt = (tag, channels, sr, bits)
        elif cid == b"data":
            if fmt is None:
                raise ValueError("data chunk before fmt chunk")
            tag, channels, sr, bits = fmt
            if tag not in (1, 0xFFFE) or bits != 16:
                raise ValueError(f"expected 16-bit PCM, got format tag {tag} with {bits} bits")
            payload = data[body:]
            payload = payload[: len(payload) - len(payload) % (2 * channels)]
            pcm = np.frombuffer(payload, dtype="<i2").reshape(-1, channels)
            return pcm.astype(np.float32) / 32768.0, int(sr)
        pos = body + size + (size & 1)
    raise ValueError("no data chunk")


def encode_wav(samples: np.ndarray, sr: int) -> bytes:
    """16-bit PCM WAV bytes; identical input gives identical bytes (no timestamps in the header)."""
    x = np.asarray(samples, dtype=np.float32)
    if x.ndim not in (1, 2) or x.shape[0] == 0:
        raise ValueError(f"encode_wav expects (frames,) or (frames, channels) samples, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("encode_wav: samples contain NaN/Inf")
    # Clip explicitly: libsndfile's float->int16 conversion does not clip by default.
    x = np.clip(x, -1.0, 32767.0 / 32768.0)
    buf = io.BytesIO()
    sf.write(buf, x, int(sr), format="WAV", subtype="PCM_16")
    return buf.getvalue()


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """Inverse of `encode_wav`: (float32 samples, sample rate); mono stays 1-D."""
    try:
        samples, sr = sf.read(io.BytesIO(data), dtype="float32")
    except Exception as exc:
        raise AudioError(f"could not decode WAV bytes ({len(data)} bytes): {exc}") from None
    return samples, int(sr)
