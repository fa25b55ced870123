"""datasets.voxceleb.layout: the real VoxCeleb folder layouts, trial lists and their errors."""
from pathlib import Path

import numpy as np
import pytest

from datasets.audio import AudioError, encode_wav, load_audio
from datasets.errors import LayoutError
from datasets.voxceleb.layout import (
    Trial,
    Utterance,
    find_layout,
    key_to_relpath,
    read_trials,
    relpath_to_key,
    write_trials,
)

WAV = encode_wav(np.zeros(160, dtype=np.float32), 16000)


def touch(base: Path, rels, data: bytes = WAV) -> None:
    for rel in rels:
        p = base / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)


# VoxCeleb1 single tree: 3 dev speakers + 2 test speakers (the test ones are named by trials).
DEV = ["id10001/1zcIwhmdeo4/00001.wav", "id10001/1zcIwhmdeo4/00002.wav", "id10001/7gWzIy6yIIk/00001.wav",
       "id10002/0_laIeN-Q44/00001.wav", "id10003/5ablueV_1tw/00001.wav"]
TEST = ["id10270/x6uYqmx31kE/00001.wav", "id10270/8jEAjG6SegY/00008.wav", "id10271/1gtz-CUIygI/00001.wav"]
VERI = ("1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00001.wav\n")


@pytest.fixture
def vox1(tmp_path):
    touch(tmp_path / "wav", DEV + TEST)
    (tmp_path / "veri_test2.txt").write_text(VERI)
    return tmp_path


def test_single_tree(vox1):
    lay = find_layout(vox1)
    assert [u.key for u in lay.train] == sorted(relpath_to_key(r) for r in DEV)
    assert lay.speakers == ["id10001", "id10002", "id10003"]
    assert [u.key for u in lay.test] == sorted(relpath_to_key(r) for r in TEST)
    assert lay.trials == {"veri_test2": [
        Trial(1, "id10270/x6uYqmx31kE/00001", "id10270/8jEAjG6SegY/00008"),
        Trial(0, "id10270/x6uYqmx31kE/00001", "id10271/1gtz-CUIygI/00001")]}
    u = lay.test[0]
    assert isinstance(u, Utterance) and Path(u.path).is_absolute() and Path(u.path).is_file()
    assert u.speaker == u.key.split("/")[0]
    # VoxCeleb1-O protocol: no test speaker trains.
    assert not {u.speaker for u in lay.test} & set(lay.speakers)


def test_all_trial_lists_define_test_speakers(vox1):
    (vox1 / "list_test_hard2.txt").write_text("0 id10003/5ablueV_1tw/00001.wav id10271/1gtz-CUIygI/00001.wav\n")
    lay = find_layout(vox1)
    assert sorted(lay.trials) == ["list_test_hard2", "veri_test2"]
    assert lay.speakers == ["id10001", "id10002"]
    assert not {u.speaker for u in lay.test} & set(lay.speakers)


def test_train_list_overrides(vox1):
    (vox1 / "train_list.txt").write_text("id10001 id10001/1zcIwhmdeo4/00002.wav\n"
                                         "id10002 id10002/0_laIeN-Q44/00001.wav\n")
    lay = find_layout(vox1)
    assert [u.key for u in lay.train] == ["id10001/1zcIwhmdeo4/00002", "id10002/0_laIeN-Q44/00001"]
    assert lay.speakers == ["id10001", "id10002"]


def test_split_folders_vox1(tmp_path):
    touch(tmp_path / "dev" / "wav", DEV)
    touch(tmp_path / "test" / "wav", TEST)
    (tmp_path / "test" / "veri_test2.txt").write_text(VERI)  # beside the test wav/ root
    lay = find_layout(tmp_path)
    assert [u.key for u in lay.train] == sorted(relpath_to_key(r) for r in DEV)
    assert all("/test/wav/" in u.path for u in lay.test) and len(lay.test) == 3
    assert not {u.speaker for u in lay.test} & set(lay.speakers)


def test_split_folders_vox2_m4a_needs_ffmpeg(tmp_path, monkeypatch):
    m4a = [r.replace(".wav", ".m4a") for r in DEV]
    touch(tmp_path / "dev" / "aac", m4a, data=b"\x00\x00\x00\x18ftypM4A ")
    touch(tmp_path / "test" / "aac", [r.replace(".wav", ".m4a") for r in TEST], data=b"\x00\x00\x00\x18ftypM4A ")
    (tmp_path / "veri_test2.txt").write_text(VERI)  # trial files name .wav even for m4a corpora
    lay = find_layout(tmp_path)
    assert len(lay.train) == 5 and all(u.path.endswith(".m4a") for u in lay.train + lay.test)
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(AudioError, match="VoxCeleb2 m4a needs ffmpeg") as exc:
        load_audio(lay.train[0].path, 16000)
    assert lay.train[0].path in str(exc.value)


def test_keys_have_no_dot_and_round_trip(tmp_path):
    touch(tmp_path / "wav", ["id10001/a.b/00001.wav", "id10002/v%2E/00001.wav"] + TEST)
    (tmp_path / "veri_test2.txt").write_text(VERI)
    lay = find_layout(tmp_path)
    keys = [u.key for u in lay.train + lay.test]
    assert all("." not in k for k in keys)
    assert "id10001/a%2Eb/00001" in keys and "id10002/v%252E/00001" in keys  # "%" escaped first
    for u in lay.train:
        assert u.path.endswith(key_to_relpath(u.key))


def test_write_read_trials_round_trip(tmp_path):
    trials = [Trial(1, "id1/v%2Ex/00001", "id1/w/00002"), Trial(0, "id1/w/00002", "id2/u/00001")]
    write_trials(tmp_path / "t.txt", trials)
    assert (tmp_path / "t.txt").read_text().splitlines()[0] == "1 id1/v.x/00001.wav id1/w/00002.wav"
    assert read_trials(tmp_path / "t.txt") == trials


# ----------------------------------------------------------------------------- errors

def test_missing_root(tmp_path):
    with pytest.raises(LayoutError, match="does not exist") as exc:
        find_layout(tmp_path / "nowhere")
    assert "nowhere" in str(exc.value)


def test_root_without_audio_folder(tmp_path):
    (tmp_path / "veri_test2.txt").write_text(VERI)
    with pytest.raises(LayoutError, match="no audio under") as exc:
        find_layout(tmp_path)
    assert "wav/idXXXXX/<video>/NNNNN.wav" in str(exc.value)


def test_wav_folder_without_wavs(tmp_path):
    touch(tmp_path / "wav", ["id10001/00001.wav"])  # one level too shallow
    (tmp_path / "veri_test2.txt").write_text(VERI)
    with pytest.raises(LayoutError) as exc:
        find_layout(tmp_path)
    msg = str(exc.value)
    assert (f"no .wav under {tmp_path / 'wav'}" in msg
            and "expected VoxCeleb layout wav/idXXXXX/<video>/NNNNN.wav" in msg)
    assert "another depth" in msg


def test_no_trial_list(tmp_path):
    touch(tmp_path / "wav", DEV + TEST)
    with pytest.raises(LayoutError, match="no trial list found") as exc:
        find_layout(tmp_path)
    assert "veri_test2.txt" in str(exc.value)


@pytest.mark.parametrize("line", ["1 id10270/x6uYqmx31kE/00001.wav",
                                  "2 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00008.wav",
                                  "1 /abs/id10270/x/00001.wav id10270/8jEAjG6SegY/00008.wav"])
def test_malformed_trial_line(vox1, line):
    (vox1 / "veri_test2.txt").write_text(VERI + "\n" + line + "\n")
    with pytest.raises(LayoutError, match="malformed trial line") as exc:
        find_layout(vox1)
    assert f"{vox1 / 'veri_test2.txt'}:4:" in str(exc.value)


def test_trial_names_missing_file(vox1):
    (vox1 / "veri_test2.txt").write_text(VERI + "1 id10271/1gtz-CUIygI/00001.wav id10271/NOPE/00009.wav\n")
    with pytest.raises(LayoutError) as exc:
        find_layout(vox1)
    msg = str(exc.value)
    assert f"{vox1 / 'veri_test2.txt'}:3:" in msg and str(vox1 / "wav" / "id10271/NOPE/00009.wav") in msg
    assert "does not exist" in msg


def test_train_list_names_missing_file(vox1):
    (vox1 / "train_list.txt").write_text("id10001 id10001/1zcIwhmdeo4/00002.wav\nid10001 id10001/gone/00001.wav\n")
    with pytest.raises(LayoutError, match="train_list.txt:2:") as exc:
        find_layout(vox1)
    assert "gone/00001.wav" in str(exc.value)


def test_zero_length_files_are_not_checked_here(vox1):
    (vox1 / "wav" / DEV[0]).write_bytes(b"")
    assert len(find_layout(vox1).train) == 5  # decoding (load_audio) reports it


def test_split_folder_without_audio_dir(tmp_path):
    touch(tmp_path / "dev" / "wav", DEV)
    (tmp_path / "test").mkdir()
    with pytest.raises(LayoutError, match="no wav/ or aac/ folder under") as exc:
        find_layout(tmp_path)
    assert str(tmp_path / "test") in str(exc.value)
