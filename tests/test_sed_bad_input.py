"""Bad input to workflows/sed.py: one clear `error:` line naming the file (and line), exit code 2,
and no shard set left looking complete."""
import shutil

import numpy as np
import pytest

from datasets.audio import encode_wav
from datasets.synthetic.dcase import generate_dcase_corpus
from workflows.sed import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return generate_dcase_corpus(tmp_path_factory.mktemp("dcase"), scenes_per_class=1, events_per_label=4,
                                 sample_rate=16000)


def copy(corpus, tmp_path):
    tau, fsd = tmp_path / "tau", tmp_path / "fsd"
    shutil.copytree(corpus[0], tau)
    shutil.copytree(corpus[1], fsd)
    return tau, fsd


def run_main(capsys, *argv):
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


FAST = ["--set", "data.sample_rate=16000", "--set", "data.per_fold=2", "--epochs", "1"]


def test_tau_without_fsd(tmp_path, capsys, corpus):
    code, err = run_main(capsys, "--tau", corpus[0], "--out", tmp_path / "o")
    assert code == 2 and "give both --tau and --fsd" in err


def test_missing_meta_column(tmp_path, capsys, corpus):
    tau, fsd = copy(corpus, tmp_path)
    meta = (tau / "meta.csv").read_text().replace("scene_label", "scene")
    (tau / "meta.csv").write_text(meta)
    code, err = run_main(capsys, "--tau", tau, "--fsd", fsd, "--out", tmp_path / "o", *FAST)
    assert code == 2 and "meta.csv line 1: missing column(s) scene_label" in err
    assert not (tmp_path / "o" / "shards").exists()


def test_unknown_label(tmp_path, capsys, corpus):
    tau, fsd = copy(corpus, tmp_path)
    lines = (fsd / "train.csv").read_text().splitlines()
    lines[3] = lines[3].replace(lines[3].split(",")[1], "Didgeridoo")
    (fsd / "train.csv").write_text("\n".join(lines) + "\n")
    code, err = run_main(capsys, "--tau", tau, "--fsd", fsd, "--out", tmp_path / "o", *FAST)
    assert code == 2 and "train.csv line 4: unknown label 'Didgeridoo'" in err


def test_unknown_ablation_fails_before_reading(tmp_path, capsys):
    code, err = run_main(capsys, "--tau", tmp_path / "nope", "--fsd", tmp_path / "nope",
                         "--ablations", "full,median", "--out", tmp_path / "o")
    assert code == 2 and "unknown ablation(s) ['median']" in err


@pytest.mark.parametrize("case", ["short_scene", "short_event", "unreadable"])
def test_bad_audio_fails_the_build_naming_the_file(ray_local, tmp_path, capsys, corpus, case):
    tau, fsd = copy(corpus, tmp_path)
    if case == "short_scene":
        victim = sorted((tau / "audio").glob("*.wav"))[0]
        victim.write_bytes(encode_wav(np.full(16000 * 8, 0.1, np.float32), 16000))
        expect = "s long; the protocol mixes 10 s scenes"
    else:
        victim = sorted((fsd / "audio_train").glob("*.wav"))[0]
        victim.write_bytes(encode_wav(np.full(100, 0.1, np.float32), 16000) if case == "short_event"
                           else b"RIFF junk")
        expect = "shorter than one frame" if case == "short_event" else "unreadable or corrupt audio file"
    # every event and scene appears in some mixture: 2 per fold x 4 folds x 3 events covers them
    code, err = run_main(capsys, "--tau", tau, "--fsd", fsd, "--out", tmp_path / "o", *FAST,
                         "--set", "data.per_fold=12")
    assert code == 2 and victim.name in err and expect in err, err
    assert not (tmp_path / "o" / "shards" / "snr20" / "manifest.json").exists()
