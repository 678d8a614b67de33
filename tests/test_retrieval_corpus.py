"""Corpus readers, the passage store and Search-R1 formatting."""

import gzip
import json

import pytest

from rlvr.retrieval.base import Hit, format_passages
from rlvr.retrieval.corpus import CorpusError, Passage, PassageStore, read_corpus


def _write(path, lines):
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_reads_flashrag_and_plain_rows(tmp_path):
    f = _write(tmp_path / "c.jsonl", [
        json.dumps({"id": "1", "contents": '"Paris"\nParis is in France.\nSecond line.'}),
        "",  # blank lines are not rows
        json.dumps({"id": 2, "title": "Berlin", "text": "Berlin is in Germany."}),
        json.dumps({"id": "3", "contents": "Untitled first line\nbody"}),
    ])
    ps = list(read_corpus(f))
    assert [p.id for p in ps] == ["1", "2", "3"]  # integer ids become strings
    assert ps[0].title == "Paris" and ps[0].text == "Paris is in France.\nSecond line."
    assert ps[0].contents == '"Paris"\nParis is in France.\nSecond line.'
    # plain rows get FlashRAG's quoted title line, so both shapes format alike
    assert ps[1].contents == '"Berlin"\nBerlin is in Germany.' and ps[1].title == "Berlin"
    assert ps[2].title == "Untitled first line" and ps[2].text == "body"


def test_gzip_corpus(tmp_path):
    f = tmp_path / "c.jsonl.gz"
    with gzip.open(f, "wt") as fh:
        fh.write(json.dumps({"id": "a", "contents": '"T"\nx'}) + "\n")
    assert [p.title for p in read_corpus(f)] == ["T"]


@pytest.mark.parametrize("line, why", [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"contents": "x"}', "missing field 'id'"),
    ('{"id": "9"}', "neither 'contents' nor 'text'"),
    ('{"id": "9", "contents": 5}', "'contents' must be a string"),
    ('{"id": [1], "contents": "x"}', "'id' must be a string or integer"),
])
def test_bad_row_names_file_and_line(tmp_path, line, why):
    f = _write(tmp_path / "bad.jsonl", [json.dumps({"id": "1", "contents": "ok"}), line])
    with pytest.raises(CorpusError) as e:
        list(read_corpus(f))
    assert f"{f}:2:" in str(e.value) and why in str(e.value)


def test_skip_mode_logs_and_continues(tmp_path, caplog):
    f = _write(tmp_path / "bad.jsonl", ['{"id": "1", "contents": "a"}', "oops",
                                        '{"id": "2", "contents": "b"}'])
    with caplog.at_level("WARNING"):
        ps = list(read_corpus(f, on_error="skip"))
    assert [p.id for p in ps] == ["1", "2"]
    assert f"{f}:2:" in caplog.text and "skipped 1 bad row" in caplog.text


def test_missing_file_and_bad_mode(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        list(read_corpus(tmp_path / "nope.jsonl"))
    with pytest.raises(ValueError, match="on_error"):
        list(read_corpus(tmp_path / "x", on_error="ignore"))


def test_progress_counts_bytes(tmp_path):
    f = _write(tmp_path / "c.jsonl", ['{"id": "1", "contents": "a"}'] * 3)
    seen = []
    list(read_corpus(f, progress=seen.append))
    assert sum(seen) == f.stat().st_size  # 3 lines × 29 bytes (28 + newline) = 87


def test_store_round_trip(tmp_path):
    ps = [Passage.from_title_text(str(i), f"T{i}", f"text é {i}") for i in range(5)]
    w = PassageStore.writer(tmp_path)
    w.add(ps[:2])
    w.add(ps[2:])
    store = w.close()
    again = PassageStore(tmp_path)
    assert len(again) == 5 and list(again) == ps and store[3] == ps[3]
    with pytest.raises(IndexError):
        again[5]
    again.close()


def test_format_passages_matches_search_r1():
    # Search-R1: title = first line of contents, text = the rest; f"Doc {i+1}(Title: {title}) {text}\n"
    hits = [Hit(Passage.from_contents("1", '"Paris"\nParis is in France.'), 2.0),
            Hit(Passage.from_title_text("2", "Berlin", "Berlin is in Germany."), 1.0)]
    assert format_passages(hits) == ('Doc 1(Title: "Paris") Paris is in France.\n'
                                     'Doc 2(Title: "Berlin") Berlin is in Germany.\n')
    assert format_passages([]) == ""
