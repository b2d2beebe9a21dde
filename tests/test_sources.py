"""Tests for kvae.data.sources: MusicNet trees (original and Kaggle layouts), metadata, plain folders."""

import pytest

from audio import LABEL_HEADER, METADATA_HEADER, METADATA_ROWS, TEST_IDS, TRAIN_IDS, silent_wav, write_musicnet
from kvae.data.sources import MUSICNET_TEST_IDS, find_recordings, read_metadata
from kvae.errors import KvaeError


def _by_key(source):
    return {r.key: r for r in source.recordings}


def _one_line(exc):
    text = str(exc)
    assert "\n" not in text, text
    return text


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("layout, name", [("original", "musicnet"), ("kaggle", "musicnet-kaggle")])
def test_musicnet_layouts_found_with_splits(tmp_path, layout, name):
    root = write_musicnet(tmp_path / "mn", layout=layout)
    source = find_recordings(root)
    assert source.layout == name
    assert source.notes == []
    recs = _by_key(source)
    assert sorted(recs) == sorted(TRAIN_IDS + TEST_IDS)
    for key, rec in recs.items():
        assert rec.split == ("test" if key in MUSICNET_TEST_IDS else "train")
        assert rec.path.is_file() and rec.path.name == f"{key}.wav"
        assert rec.path.parent.name == f"{rec.split}_data"
    # metadata rows joined, quoted commas and non-ASCII intact
    assert recs["2303"].metadata["composition"] == "WTK I, No. 5: Prelude and Fugue in D major"
    assert recs["2303"].metadata["seconds"] == 92
    assert recs["2532"].metadata["source"] == "Neal O\u2019Doan"
    assert recs["1727"].metadata["ensemble"] == "Piano Quintet"


def test_musicnet_test_ids_constant():
    assert set(MUSICNET_TEST_IDS) == {"1759", "1819", "2106", "2191", "2298", "2303", "2382", "2416", "2556", "2628"}


def test_read_metadata_real_file(real_metadata):
    rows = read_metadata(real_metadata)
    assert len(rows) == 330
    assert sum(r["seconds"] for r in rows.values()) == 122709
    assert all(isinstance(k, str) for k in rows)
    assert all(isinstance(r["seconds"], int) for r in rows.values())
    assert set(MUSICNET_TEST_IDS) <= set(rows)
    assert rows["2303"]["composition"] == "WTK I, No. 5: Prelude and Fugue in D major"
    assert len({r["composer"] for r in rows.values()}) == 10
    assert len({r["ensemble"] for r in rows.values()}) == 21
    assert sum(r["ensemble"] == "Solo Piano" for r in rows.values()) >= 149
    assert any("\u2019" in r["source"] for r in rows.values())


# ---------------------------------------------------------------- selection


@pytest.mark.parametrize("layout", ["original", "kaggle"])
def test_select_by_ensemble(tmp_path, layout):
    root = write_musicnet(tmp_path / "mn", layout=layout)
    source = find_recordings(root, select={"ensemble": "Solo Piano"})
    assert sorted(_by_key(source)) == ["1759", "2303", "2532"]
    source = find_recordings(root, select={"ensemble": "solo piano"})
    assert sorted(_by_key(source)) == ["1759", "2303", "2532"]


def test_select_by_composer_case_insensitive_and_list(tmp_path):
    root = write_musicnet(tmp_path / "mn")
    assert sorted(_by_key(find_recordings(root, select={"composer": "bach"}))) == ["2186", "2303"]
    got = find_recordings(root, select={"composer": ["BACH", "schubert"]})
    assert sorted(_by_key(got)) == ["1727", "1759", "2186", "2303"]
    got = find_recordings(root, select={"composer": "Bach", "ensemble": "Solo Piano"})
    assert sorted(_by_key(got)) == ["2303"]


def test_select_by_id(tmp_path):
    root = write_musicnet(tmp_path / "mn")
    recs = _by_key(find_recordings(root, select={"id": [2303, "1727"]}))
    assert sorted(recs) == ["1727", "2303"]
    assert recs["2303"].split == "test" and recs["1727"].split == "train"
    assert sorted(_by_key(find_recordings(root, select={"id": 2532}))) == ["2532"]


def test_select_matching_nothing_or_unknown_field(tmp_path):
    root = write_musicnet(tmp_path / "mn")
    with pytest.raises(KvaeError) as err:
        find_recordings(root, select={"composer": "Chopin"})
    assert str(root) in _one_line(err.value)
    with pytest.raises(KvaeError) as err:
        find_recordings(root, select={"instrument": "piano"})
    assert "instrument" in _one_line(err.value)


def test_select_without_metadata_names_the_file(tmp_path):
    root = write_musicnet(tmp_path / "mn", metadata=False)
    with pytest.raises(KvaeError) as err:
        find_recordings(root, select={"ensemble": "Solo Piano"})
    text = _one_line(err.value)
    assert str(root / "musicnet_metadata.csv") in text
    assert "ensemble" in text


def test_select_by_id_needs_no_metadata(tmp_path):
    root = write_musicnet(tmp_path / "mn", layout="kaggle", metadata=False)
    source = find_recordings(root, select={"id": ["2303"]})
    assert [r.key for r in source.recordings] == ["2303"]
    assert source.recordings[0].split == "test"


def test_missing_metadata_without_selection_is_a_note(tmp_path):
    root = write_musicnet(tmp_path / "mn", metadata=False)
    source = find_recordings(root)
    assert len(source.recordings) == len(TRAIN_IDS + TEST_IDS)
    assert all(r.metadata == {} for r in source.recordings)
    assert len(source.notes) == 1
    assert "musicnet_metadata.csv" in source.notes[0] and "not found" in source.notes[0]
    assert "\n" not in source.notes[0]


def test_metadata_with_unexpected_columns(tmp_path):
    root = write_musicnet(tmp_path / "mn", metadata=False)
    path = root / "musicnet_metadata.csv"
    path.write_text('"id","composer","composition","movement","instrumentation","source","transcriber",'
                    '"catalog_name","duration"\n2303,"Bach","WTK I","1. Prelude","Solo Piano","x","y","BWV850",92\n',
                    encoding="utf-8")
    with pytest.raises(KvaeError) as err:
        find_recordings(root)
    text = _one_line(err.value)
    assert str(path) in text
    assert "ensemble" in text and "seconds" in text
    with pytest.raises(KvaeError) as err:
        read_metadata(path)
    assert str(path) in _one_line(err.value)


def test_metadata_bad_seconds_names_line(tmp_path):
    path = tmp_path / "musicnet_metadata.csv"
    path.write_text(METADATA_HEADER + "\n" + METADATA_ROWS["2303"] + "\n"
                    + METADATA_ROWS["1759"].replace(",194", ",n/a") + "\n", encoding="utf-8")
    with pytest.raises(KvaeError) as err:
        read_metadata(path)
    text = _one_line(err.value)
    assert str(path) in text and "line 3" in text and "seconds" in text


def test_read_metadata_missing_file(tmp_path):
    with pytest.raises(KvaeError) as err:
        read_metadata(tmp_path / "musicnet_metadata.csv")
    assert str(tmp_path / "musicnet_metadata.csv") in _one_line(err.value)


# ---------------------------------------------------------------- plain folders


def test_plain_folder_nested_with_test_split(tmp_path):
    root = tmp_path / "audio"
    silent_wav(root / "a.wav")
    silent_wav(root / "B.WAV")
    silent_wav(root / "sub" / "deep" / "c.wav")
    silent_wav(root / "contest" / "d.wav")  # not a held-out folder: the name only contains "test"
    silent_wav(root / "test" / "e.wav")
    silent_wav(root / "test" / "more" / "f.wav")
    (root / "notes.txt").write_text("not audio")
    (root / "sub" / "cover.png").write_bytes(b"\x89PNG")
    source = find_recordings(root)
    assert source.layout == "folder"
    splits = {r.key: r.split for r in source.recordings}
    assert splits == {
        "a": "train", "B": "train", "sub/deep/c": "train", "contest/d": "train",
        "test/e": "test", "test/more/f": "test",
    }
    assert all(r.path.is_file() and r.metadata == {} for r in source.recordings)


def test_plain_folder_cannot_select_by_metadata(tmp_path):
    root = tmp_path / "audio"
    silent_wav(root / "a.wav")
    with pytest.raises(KvaeError) as err:
        find_recordings(root, select={"ensemble": "Solo Piano"})
    assert str(root) in _one_line(err.value)


# ---------------------------------------------------------------- bad data paths


def test_data_path_missing(tmp_path):
    with pytest.raises(KvaeError) as err:
        find_recordings(tmp_path / "nowhere")
    text = _one_line(err.value)
    assert str(tmp_path / "nowhere") in text and "does not exist" in text


def test_data_path_is_a_file(tmp_path):
    path = silent_wav(tmp_path / "one.wav")
    with pytest.raises(KvaeError) as err:
        find_recordings(path)
    text = _one_line(err.value)
    assert str(path) in text and "not a folder" in text


def test_data_path_empty_folder(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(KvaeError) as err:
        find_recordings(root)
    text = _one_line(err.value)
    assert str(root) in text and "empty" in text


def test_data_path_without_audio(tmp_path):
    root = tmp_path / "docs"
    (root / "sub").mkdir(parents=True)
    (root / "readme.txt").write_text("hello")
    (root / "sub" / "labels.csv").write_text(LABEL_HEADER + "\n")
    with pytest.raises(KvaeError) as err:
        find_recordings(root)
    text = _one_line(err.value)
    assert str(root) in text and "no audio" in text


def test_musicnet_tree_without_audio(tmp_path):
    root = write_musicnet(tmp_path / "mn", train_ids=(), test_ids=())
    with pytest.raises(KvaeError) as err:
        find_recordings(root)
    text = _one_line(err.value)
    assert str(root) in text and "no audio" in text


def test_read_metadata_with_bom_and_crlf(tmp_path):
    # re-saved by a spreadsheet: UTF-8 BOM and CRLF line ends
    path = tmp_path / "musicnet_metadata.csv"
    text = "\r\n".join([METADATA_HEADER] + list(METADATA_ROWS.values())) + "\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    rows = read_metadata(path)
    assert sorted(rows) == sorted(METADATA_ROWS)
    assert rows["2303"]["composition"] == "WTK I, No. 5: Prelude and Fugue in D major"
    assert rows["2532"]["source"] == "Neal O\u2019Doan"
    assert sum(r["seconds"] for r in rows.values()) == 447 + 214 + 548 + 194 + 92 + 226


def test_read_metadata_not_utf8(tmp_path):
    path = tmp_path / "musicnet_metadata.csv"
    path.write_bytes((METADATA_HEADER + "\n" + METADATA_ROWS["2532"] + "\n").encode("cp1252"))
    with pytest.raises(KvaeError) as err:
        read_metadata(path)
    text = _one_line(err.value)
    assert str(path) in text and "UTF-8" in text


# ---------------------------------------------------------------- links and folders that cannot be used


def test_symlink_loops_and_broken_links_are_listed_as_skipped(tmp_path):
    root = tmp_path / "audio"
    silent_wav(root / "good.wav")
    (root / "loop.wav").symlink_to("loop.wav")  # ln -s loop.wav loop.wav
    (root / "a.wav").symlink_to("b.wav")  # a -> b -> a
    (root / "b.wav").symlink_to("a.wav")
    (root / "gone.wav").symlink_to(tmp_path / "nowhere.wav")
    (root / "old-folder").symlink_to(tmp_path / "unmounted")  # a link to a folder of audio that is gone
    source = find_recordings(root)
    assert [r.key for r in source.recordings] == ["good"]
    skipped = {p: reason for p, reason in source.skipped}
    assert sorted(skipped) == sorted(str(root / n) for n in ("loop.wav", "a.wav", "b.wav", "gone.wav", "old-folder"))
    for name in ("loop.wav", "a.wav", "b.wav"):
        assert skipped[str(root / name)].startswith("symlink loop"), skipped
    assert "broken symlink" in skipped[str(root / "gone.wav")] and "nowhere.wav" in skipped[str(root / "gone.wav")]
    assert "broken symlink" in skipped[str(root / "old-folder")]


def test_symlinked_folders_are_followed_once(tmp_path):
    root = tmp_path / "audio"
    silent_wav(root / "a.wav")
    silent_wav(tmp_path / "elsewhere" / "b.wav")
    (root / "more").symlink_to(tmp_path / "elsewhere")  # a folder of audio outside the root, linked in
    (root / "more" / "up").symlink_to(root)  # a link back up: searching it would never end
    source = find_recordings(root)
    assert sorted(r.key for r in source.recordings) == ["a", "more/b"]
    assert source.skipped == [(str(root / "more" / "up"), f"leads to the folder {root}, which is searched already")]

