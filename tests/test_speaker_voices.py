"""scripts/speaker_voices.py: Debian's TTS voices as a VoxCeleb1-layout corpus, plus MUSAN and RIRS_NOISES
layouts. Runs the script for real (tiny sizes); skips where the system packages it needs are absent."""
import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf

from datasets.augment_sources import musan_files, rir_files
from datasets.voxceleb.layout import find_layout

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "speaker_voices.py"
TOOLS = ("flite", "sox", "festival", "text2wave", "espeak-ng")
MISSING = [t for t in TOOLS if shutil.which(t) is None]
APT = ("as root: apt-get install -y --no-install-recommends flite festival festvox-kallpc16k festvox-kdlpc16k "
       "festvox-us-slt-hts sox espeak-ng")


def _script():
    spec = importlib.util.spec_from_file_location("speaker_voices", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _sounds_missing() -> bool:
    if MISSING:
        return False  # the tools' skip reason is the one to report
    return not _script().find_sounds(os.environ.get("SPEAKER_VOICES_SOUNDS")).keys() >= {"scratch", "sonic-pi"}


pytestmark = [
    pytest.mark.skipif(bool(MISSING), reason=f"{', '.join(MISSING)} not on PATH ({APT})"),
    pytest.mark.skipif(_sounds_missing(), reason="scratch / sonic-pi-samples sounds not unpacked: run "
                       "`python scripts/speaker_voices.py --fetch-sounds ...` once (apt-get download + dpkg-deb -x)"),
]

# 7 training speakers over 6 base voices: the first voice (flite kal, 8 kHz) is shifted by -400 and +400 cents
TINY = ["--n-train-speakers", "7", "--n-test-speakers", "3", "--sessions", "2", "--utts", "1", "--n-noise", "2",
        "--n-music", "2", "--n-speech", "2", "--rooms", "1", "--rirs-per-room", "2", "--seed", "3"]
UTT = re.compile(r"id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav")


def run(*args, check=True):
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT)
    if check:
        assert proc.returncode == 0, proc.stderr[-2000:]
    return proc


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    base = tmp_path_factory.mktemp("voices")
    proc = run("--out", str(base / "a"), *TINY)
    assert "[utterances]" in proc.stdout and "done in" in proc.stdout
    return base


def test_corpus_is_voxceleb1(built):
    corpus = built / "a" / "voxceleb1"
    lay = find_layout(corpus)
    assert len(lay.speakers) == 7 and len(lay.train) == 7 * 2
    test_spk = {u.speaker for u in lay.test}
    assert len(test_spk) == 3 and len(lay.test) == 3 * 2 and not test_spk & set(lay.speakers)
    for part in ("dev", "test"):
        for p in (corpus / part / "wav").rglob("*.wav"):
            assert UTT.fullmatch(p.relative_to(corpus / part / "wav").as_posix())
    trials = lay.trials["veri_test2"]
    assert {t.label for t in trials} == {0, 1}
    spk = {u.key: u.speaker for u in lay.test}
    assert all((spk[t.enroll] == spk[t.test]) == (t.label == 1) for t in trials)


def test_every_wav_is_16k_mono_int16(built):
    wavs = sorted((built / "a").rglob("*.wav"))
    assert len(wavs) == 20 + 6 + 6
    for p in wavs:
        info = sf.info(p)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16"), p
        assert info.frames > 0


def test_musan_and_rirs_layouts(built):
    out = built / "a"
    names = sorted(p.relative_to(out).as_posix() for p in (out / "musan").rglob("*.wav"))
    assert names == [f"musan/{k}/{s}/{k}-{s}-{i:04d}.wav"
                     for k, s in (("music", "fma"), ("noise", "free-sound"), ("speech", "librivox")) for i in range(2)]
    assert [k for k, _ in musan_files(out)] == ["noise"] * 2 + ["music"] * 2 + ["speech"] * 2
    assert all(sf.info(p).duration >= 3.0 for _, p in musan_files(out))
    rirs = rir_files(out)
    assert [Path(p).relative_to(out).as_posix() for p in rirs] == [
        f"RIRS_NOISES/simulated_rirs/{size}room/Room001/Room001-{m:05d}.wav"
        for size in ("large", "medium", "small") for m in (1, 2)]
    for p in rirs:
        x, _ = sf.read(p)
        assert abs(abs(x).max() - 1.0) < 1e-3  # peak-normalised


def test_same_seed_same_bytes_and_rerun_is_a_noop(built):
    run("--out", str(built / "b"), *TINY, "--jobs", "1")
    a, b = snapshot(built / "a"), snapshot(built / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert "nothing to do" in run("--out", str(built / "a"), *TINY).stdout
    other = run("--out", str(built / "a"), *TINY[:-1], "4", check=False)  # other seed into a finished build
    assert other.returncode == 2 and other.stderr.startswith("error:")


def test_bad_sizes_are_refused(tmp_path):
    proc = run("--out", str(tmp_path / "x"), "--n-test-speakers", "1", check=False)
    assert proc.returncode == 2 and proc.stderr.startswith("error:") and not (tmp_path / "x").exists()


def test_interrupted_run_leaves_nothing(tmp_path):
    out = tmp_path / "out"
    sizes = ["--n-train-speakers", "12", "--n-test-speakers", "2", "--sessions", "2", "--utts", "2"]
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "--out", str(out), *sizes], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
                            # Ctrl-C at a terminal: a suite started in the background (`make test &`) ignores
                            # SIGINT, and its children would inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:
        if line.startswith("[tts]"):
            break
    os.killpg(proc.pid, signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 130 and "interrupted: nothing written" in err
    assert not out.exists() and os.listdir(tmp_path) == []  # the hidden partial folder is gone too
