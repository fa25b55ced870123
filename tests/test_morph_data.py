"""Paired voice-face data in the real layouts: VoxCeleb1 wav folders + vox1_meta.csv (tab-separated, as published)
+ VGGFace name folders / VGGFace2 id folders with identity_meta.csv; pairing by name, split by identity, errors."""
import numpy as np
import pytest
from conftest import write_wav
from PIL import Image

from datasets.errors import LayoutError
from datasets.morph import find_pairs, read_vox1_meta
from datasets.synthetic import morph as gen

# the published file's first lines, byte for byte (tabs; names with dots)
META = ("VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
        "id10001\tA.J._Buckley\tm\tIreland\tdev\n"
        "id10002\tA.R._Rahman\tm\tIndia\tdev\n"
        "id10006\tAbbie_Cornish\tf\tAustralia\tdev\n"
        "id10310\tFanny_Ardant\tf\tNorway\tdev\n"
        "id10311\tFarrah_Abraham\tf\tUSA\tdev\n"
        "id10312\tFawad_Khan\tm\tPakistan\tdev\n")


def make_layout(root, speakers=("id10001", "id10002", "id10310", "id10311"),
                faces=("A.J._Buckley", "A.R._Rahman", "Fanny_Ardant", "Farrah_Abraham", "Fawad_Khan"),
                empty_face=None):
    (root / "vox").mkdir(parents=True)
    (root / "vox" / "vox1_meta.csv").write_text(META)
    for i, spk in enumerate(speakers):
        for u in range(2):
            write_wav(root / "vox" / "wav" / spk / "1zcIwhmdeo4" / f"{u + 1:05d}.wav",
                      0.1 * np.sin(np.arange(4000) * (0.05 + 0.01 * i)))
    for name in faces:
        (root / "vgg" / name).mkdir(parents=True)
        if name != empty_face:
            for k in range(3):
                Image.new("RGB", (20, 24), (10 * k, 50, 90)).save(root / "vgg" / name / f"{k + 1:08d}.jpg")
    return root / "vox", root / "vgg"


def test_meta_file_as_published():
    meta = read_vox1_meta_text(META)
    assert meta["id10001"] == ("A.J._Buckley", "m") and meta["id10006"] == ("Abbie_Cornish", "f") and len(meta) == 6


def read_vox1_meta_text(text):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "vox1_meta.csv"
        p.write_text(text)
        return read_vox1_meta(p)


@pytest.mark.parametrize("text, match", [
    ("id\tname\n", r"vox1_meta.csv:1: header"),
    (META + "id10400\tJack_Black\tm\n", r"vox1_meta.csv:8: malformed line"),
    (META + "id10001\tSomeone\tm\tUSA\tdev\n", r"vox1_meta.csv:8: id10001 appears twice"),
])
def test_meta_file_errors_name_the_line(text, match):
    with pytest.raises(LayoutError, match=match):
        read_vox1_meta_text(text)


def test_pairing_by_name_and_split_by_initials(tmp_path):
    vox, vgg = make_layout(tmp_path)
    layout = find_pairs(vox, vgg)
    assert layout.identities == {"train": ["Fanny_Ardant", "Farrah_Abraham"], "test": ["A.J._Buckley", "A.R._Rahman"]}
    assert layout.unpaired_faces == 1 and layout.gender["A.J._Buckley"] == "m"   # Fawad_Khan: a face, no voice
    assert [v.key for v in layout.voices["test"]] == ["id10001/1zcIwhmdeo4/00001", "id10001/1zcIwhmdeo4/00002",
                                                      "id10002/1zcIwhmdeo4/00001", "id10002/1zcIwhmdeo4/00002"]
    assert {v.name for v in layout.voices["train"]} == {"Fanny_Ardant", "Farrah_Abraham"}
    keys = [f.key for f in layout.faces["test"]]
    assert keys[0] == "A%2EJ%2E_Buckley/00000001" and all("." not in k for k in keys) and len(keys) == 6
    assert {f.identity for f in layout.faces["test"]} == {"A.J._Buckley", "A.R._Rahman"}
    other = find_pairs(vox, vgg, test_initials="F")   # configurable split
    assert other.identities["test"] == ["Fanny_Ardant", "Farrah_Abraham"]
    sub = find_pairs(vox, vgg, max_utts=1, max_images=2)
    assert len(sub.voices["test"]) == 2 and len(sub.faces["test"]) == 4


def test_vggface2_ids_paired_through_identity_meta(tmp_path):
    vox, vgg = make_layout(tmp_path, faces=())
    names = ["A.J._Buckley", "A.R._Rahman", "Fanny_Ardant", "Farrah_Abraham"]
    rows = ["Class_ID, Name, Sample_Num, Flag, Gender"]
    for i, name in enumerate(names):
        folder = vgg / f"n{i + 1:06d}"
        folder.mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(folder / "0001_01.jpg")
        rows.append(f'n{i + 1:06d}, "{name}", 1, 1, m')
    (vgg / "identity_meta.csv").write_text("\n".join(rows) + "\n")
    layout = find_pairs(vox, vgg)
    assert layout.identities["test"] == ["A.J._Buckley", "A.R._Rahman"]
    assert layout.faces["test"][0].key == "n000001/0001_01"


def test_missing_pairings_named_all_at_once_or_skipped(tmp_path):
    vox, vgg = make_layout(tmp_path, speakers=("id10001", "id10002", "id10310", "id10311", "id10312", "id19999"),
                           faces=("A.J._Buckley", "A.R._Rahman", "Fanny_Ardant", "Farrah_Abraham", "Fawad_Khan"),
                           empty_face="Fawad_Khan")
    (vgg / "Fawad_Khan").rmdir()
    with pytest.raises(LayoutError) as err:
        find_pairs(vox, vgg)
    msg = str(err.value)
    assert "2 unpaired or empty identities" in msg and "id19999" in msg and "Fawad_Khan" in msg and "--skip-bad" in msg
    layout = find_pairs(vox, vgg, skip_bad=True)
    assert len(layout.skipped) == 2 and layout.identities["train"] == ["Fanny_Ardant", "Farrah_Abraham"]


def test_identity_without_images_or_utterances_is_named(tmp_path):
    vox, vgg = make_layout(tmp_path, empty_face="Fanny_Ardant")
    (vox / "wav" / "id10311" / "emptyvideo1").mkdir()
    for f in (vox / "wav" / "id10311" / "1zcIwhmdeo4").iterdir():
        f.unlink()
    with pytest.raises(LayoutError, match=r"Fanny_Ardant: face folder .* holds no images.*Farrah_Abraham: speaker "
                                          r"folder id10311 holds no \.wav"):
        find_pairs(vox, vgg)


def test_missing_roots_and_meta_named(tmp_path):
    with pytest.raises(LayoutError, match="voice root .* does not exist"):
        find_pairs(tmp_path / "nope", tmp_path)
    vox, vgg = make_layout(tmp_path)
    (vox / "vox1_meta.csv").unlink()
    with pytest.raises(LayoutError, match="vox1_meta.csv not found"):
        find_pairs(vox, vgg)
    with pytest.raises(LayoutError, match="need at least 2"):
        find_pairs(vox, vgg, meta=write_meta(tmp_path, META), test_initials="Z")


def write_meta(tmp_path, text):
    p = tmp_path / "meta.csv"
    p.write_text(text)
    return p


def test_generator_attributes_drive_voice_and_face():
    """The documented links: a bigger identity has a lower pitch, lower formants (smaller scale) and a wider face;
    a darker tone a steeper tilt and darker skin; female a higher pitch range and a shorter face."""
    rng = lambda: np.random.default_rng(0)   # noqa: E731  same independent draws: only the attribute differs
    small, big = ({"female": False, "size": s, "tone": 0.5} for s in (0.1, 0.9))
    assert gen.voice_of(big, rng())["f0"] < gen.voice_of(small, rng())["f0"]
    assert gen.voice_of(big, rng())["vtl"] < gen.voice_of(small, rng())["vtl"]
    assert gen.face_of(big, rng())["face_w"] > gen.face_of(small, rng())["face_w"]
    light, dark = ({"female": True, "size": 0.5, "tone": t} for t in (0.1, 0.9))
    assert gen.voice_of(dark, rng())["tilt"] > gen.voice_of(light, rng())["tilt"]
    assert (gen.face_of(dark, rng())["skin"] < gen.face_of(light, rng())["skin"]).all()
    male = {"female": False, "size": 0.5, "tone": 0.5}
    assert gen.voice_of(dict(male, female=True), rng())["f0"] > 160 > gen.voice_of(male, rng())["f0"]
    assert gen.face_of(dict(male, female=True), rng())["face_h"] < 0.405 < gen.face_of(male, rng())["face_h"]


def test_generated_corpus_is_deterministic_and_in_the_layouts(tmp_path):
    kw = dict(n_train_ids=2, n_test_ids=2, sessions=1, utts_per_session=1, images_per_id=1, image_size=16,
              min_dur=0.3, max_dur=0.3)
    a, b = gen.generate_morph_corpus(tmp_path / "a", **kw), gen.generate_morph_corpus(tmp_path / "b", **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    layout = find_pairs(a / "voices", a / "faces")
    assert all(n[0] in "ABCDE" for n in layout.identities["test"])
    assert all(n[0] not in "ABCDE" for n in layout.identities["train"])
    assert (a / "voices" / "vox1_meta.csv").read_text().startswith("VoxCeleb1 ID\tVGGFace1 ID\t")
