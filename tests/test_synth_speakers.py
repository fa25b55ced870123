"""datasets.synthetic.speakers: a generated corpus in exactly the VoxCeleb1 layout."""
import json
import re

import pytest
import soundfile as sf

from datasets.synthetic.speakers import generate_corpus, main
from datasets.voxceleb.layout import find_layout

SMALL = dict(n_train_speakers=3, n_test_speakers=3, sessions_per_speaker=2, utts_per_session=2,
             min_dur=0.6, max_dur=0.9)
LINE = re.compile(r"^[01] id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav$")


def snapshot(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_layout_is_voxceleb1(tmp_path):
    root = generate_corpus(tmp_path / "c", seed=0, **SMALL)
    wavs = sorted((root / "wav").glob("*/*/*.wav"))
    assert len(wavs) == 6 * 2 * 2
    assert all(re.fullmatch(r"id\d{5}/[A-Za-z0-9_-]{11}/\d{5}\.wav", p.relative_to(root / "wav").as_posix())
               for p in wavs)
    info = sf.info(wavs[0])
    assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
    assert 0.6 <= info.duration <= 0.9

    lay = find_layout(root)
    assert len(lay.speakers) == 3 and len(lay.train) == 12 and len(lay.test) == 12
    assert not {u.speaker for u in lay.test} & set(lay.speakers)
    trials = lay.trials["veri_test2"]
    labels = [t.label for t in trials]
    assert labels.count(1) == labels.count(0) > 0  # balanced
    spk = {u.key: u.speaker for u in lay.test}
    sess = {u.key: u.key.split("/")[1] for u in lay.test}
    for t in trials:
        assert (spk[t.enroll] == spk[t.test]) == (t.label == 1)
        if t.label == 1:
            assert sess[t.enroll] != sess[t.test]  # target trials cross sessions (channels)
    lines = (root / "veri_test2.txt").read_text().splitlines()
    assert len(lines) == len(trials) and all(LINE.match(x) for x in lines)
    assert len(set(lines)) == len(lines)


def test_deterministic(tmp_path):
    a = snapshot(generate_corpus(tmp_path / "a", seed=1, **SMALL))
    b = snapshot(generate_corpus(tmp_path / "b", seed=1, **SMALL))
    c = snapshot(generate_corpus(tmp_path / "c", seed=2, **SMALL))
    assert a == b
    assert a.keys() != c.keys() or a != c
    assert a["veri_test2.txt"] != c["veri_test2.txt"]


def test_idempotent_skip_and_parameter_mismatch(tmp_path):
    root = generate_corpus(tmp_path / "c", seed=0, **SMALL)
    marker = json.loads((root / ".complete").read_text())
    assert marker["seed"] == 0 and marker["n_train_speakers"] == 3
    victim = next((root / "wav").glob("*/*/*.wav"))
    victim.write_bytes(b"touched")  # a skipped rerun must not rewrite anything
    generate_corpus(root, seed=0, **SMALL)
    assert victim.read_bytes() == b"touched"
    with pytest.raises(ValueError, match="other parameters"):
        generate_corpus(root, seed=5, **SMALL)


def test_interrupted_run_is_completed(tmp_path):
    root = generate_corpus(tmp_path / "c", seed=0, **SMALL)
    before = snapshot(root)
    (root / ".complete").unlink()
    (root / "veri_test2.txt").unlink()
    next((root / "wav").glob("*/*/*.wav")).unlink()
    generate_corpus(root, seed=0, **SMALL)
    assert snapshot(root) == before


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "cli"), "--seed", "3", "--n-train-speakers", "2", "--n-test-speakers", "2",
                 "--sessions-per-speaker", "2", "--utts-per-session", "1", "--min-dur", "0.5", "--max-dur", "0.6"]) == 0
    assert (tmp_path / "cli" / ".complete").is_file() and "corpus at" in capsys.readouterr().out
    assert main([str(tmp_path / "cli"), "--seed", "4", "--n-train-speakers", "2", "--n-test-speakers", "2",
                 "--sessions-per-speaker", "2", "--utts-per-session", "1", "--min-dur", "0.5", "--max-dur", "0.6"]) == 2
    assert "other parameters" in capsys.readouterr().err
