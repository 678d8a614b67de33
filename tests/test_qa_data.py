"""QA benchmark loaders: local FlashRAG layouts, any JSONL / parquet file, bad rows named."""

import json

import pytest

from rlvr.environments.qa_data import QA_DATASETS, find_local, load_qa, load_qa_many


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


ROWS = [
    {"id": "test_0", "question": "who wrote hamlet", "golden_answers": ["William Shakespeare",
                                                                      "Shakespeare"],
     "metadata": {"x": 1}},
    {"id": "test_1", "question": "capital of France?", "golden_answers": ["Paris"]},
    {"id": "test_2", "question": "year of the moon landing", "golden_answers": [1969]},
]


def test_named_benchmark_from_a_local_flashrag_layout(tmp_path):
    write_jsonl(tmp_path / "nq" / "test.jsonl", ROWS)
    tasks = load_qa("nq", data_dir=tmp_path, hub=False)
    assert [t.id for t in tasks] == ["nq:0", "nq:1", "nq:2"]
    assert tasks[0].prompt == "who wrote hamlet"
    assert tasks[0].answer == ["William Shakespeare", "Shakespeare"]
    assert tasks[2].answer == ["1969"]  # numbers become text
    assert tasks[1].info == {"dataset": "nq"}
    assert len(load_qa("nq", data_dir=tmp_path, hub=False, limit=2)) == 2


def test_every_search_r1_benchmark_has_a_source_and_multi_hop_ones_use_dev():
    assert set(QA_DATASETS) == {"nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique",
                                "bamboogle"}
    assert {n for n, s in QA_DATASETS.items() if s.split == "dev"} == {
        "hotpotqa", "2wikimultihopqa", "musique"}


def test_split_and_alternative_layouts(tmp_path):
    write_jsonl(tmp_path / "hotpotqa" / "dev.jsonl", ROWS[:1])
    write_jsonl(tmp_path / "hotpotqa_train.jsonl", ROWS[:2])
    assert len(load_qa("hotpotqa", data_dir=tmp_path, hub=False)) == 1  # default split: dev
    assert len(load_qa("hotpotqa", split="train", data_dir=tmp_path, hub=False)) == 2
    assert find_local("musique", "dev", tmp_path) is None
    with pytest.raises(FileNotFoundError, match="no local copy of musique"):
        load_qa("musique", data_dir=tmp_path, hub=False)


def test_any_file_with_the_two_fields_jsonl_and_parquet(tmp_path):
    import datasets

    f = write_jsonl(tmp_path / "mine.jsonl", ROWS)
    assert [t.id for t in load_qa(str(f))] == ["mine:0", "mine:1", "mine:2"]
    pq = tmp_path / "other.parquet"
    datasets.Dataset.from_list([{"question": "q one", "golden_answers": ["a", "b"]},
                                {"question": "q two", "golden_answers": ["c"]}]).to_parquet(str(pq))
    tasks = load_qa(str(pq))
    assert [(t.id, t.prompt, t.answer) for t in tasks] == [
        ("other:0", "q one", ["a", "b"]), ("other:1", "q two", ["c"])]
    many = load_qa_many(f"{f},{pq}")
    assert list(many) == ["mine", "other"] and len(many["other"]) == 2


@pytest.mark.parametrize("row, message", [
    ({"golden_answers": ["x"]}, "bad.jsonl:2: field 'question' must be non-empty text"),
    ({"question": "  ", "golden_answers": ["x"]}, "bad.jsonl:2: field 'question' must be non-empty"),
    ({"question": "q"}, "bad.jsonl:2: no 'golden_answers' field"),
    ({"question": "q", "golden_answers": []}, "bad.jsonl:2: field 'golden_answers' must be a non-empty"),
    ({"question": "q", "golden_answers": [["nested"]]}, r"bad.jsonl:2: golden_answers\[0\] must be text"),
    ({"question": "q", "golden_answers": [""]}, "bad.jsonl:2: every entry of 'golden_answers' is empty"),
    # qa_em drops golds that normalise to nothing, so this row could never be rewarded
    ({"question": "q", "golden_answers": ["The", "a"]},
     r"bad.jsonl:2: every entry of 'golden_answers' \(\['The', 'a'\]\) normalises to nothing"),
    ([1, 2], "bad.jsonl:2: expected an object"),
])
def test_bad_rows_name_file_line_and_field(tmp_path, row, message):
    f = write_jsonl(tmp_path / "bad.jsonl", [ROWS[0], row])
    with pytest.raises(ValueError, match=message) as e:
        load_qa(str(f))
    assert str(f) in str(e.value)


def test_bad_json_line_and_unknown_names(tmp_path):
    f = write_jsonl(tmp_path / "broken.jsonl", [ROWS[0], "{not json"])
    with pytest.raises(ValueError, match=r"broken.jsonl:2: not valid JSON"):
        load_qa(str(f))
    with pytest.raises(KeyError, match="unknown QA dataset 'squad'; known: nq, triviaqa"):
        load_qa("squad")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_qa(str(tmp_path / "missing.jsonl"))
    with pytest.raises(ValueError, match="named twice"):
        load_qa_many(f"{f},{f}")
