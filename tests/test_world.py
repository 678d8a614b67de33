"""The synthetic world: deterministic files, disjoint splits, every answer supported by the corpus."""

import json

import pytest

from rlvr.jobs.search_world.world import QUESTION_TYPES, WorldConfig, build_world, write_world

SMALL = WorldConfig(seed=3, num_people=60, num_cities=10, num_countries=4, num_orgs=6,
                    dev_people=10, test_people=10)


def _read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    a = write_world(build_world(SMALL), tmp_path / "a")
    b = write_world(build_world(SMALL), tmp_path / "b")
    for name in ("corpus", "train", "dev", "test", "world"):
        assert a[name].read_bytes() == b[name].read_bytes(), name
    other = WorldConfig(**{**SMALL.__dict__, "seed": 4})
    c = write_world(build_world(other), tmp_path / "c")
    assert c["corpus"].read_bytes() != a["corpus"].read_bytes()


def test_sizes_and_formats(tmp_path):
    paths = write_world(build_world(SMALL), tmp_path)
    corpus = _read(paths["corpus"])
    # one passage per person, city, organisation and country: 60 + 10 + 6 + 4 = 80
    assert len(corpus) == 80
    assert [p["id"] for p in corpus] == [str(i) for i in range(80)]
    for p in corpus:
        assert set(p) == {"id", "contents"}
        title, text = p["contents"].split("\n", 1)
        assert title.startswith('"') and title.endswith('"') and text
    sizes = {s: len(_read(paths[s])) for s in ("train", "dev", "test")}
    # 3 question types per person: test 10 × 3 = 30, dev 10 × 3 = 30, train (60 - 20) × 3 = 120
    assert sizes == {"train": 120, "dev": 30, "test": 30}
    row = _read(paths["test"])[0]
    assert set(row) == {"id", "question", "golden_answers", "metadata"}
    assert isinstance(row["golden_answers"], list) and row["golden_answers"][0]


def test_splits_are_disjoint_by_subject():
    w = build_world(SMALL)
    subjects = {s: {r["metadata"]["subject"] for r in rows} for s, rows in w.splits.items()}
    assert len(subjects["test"]) == 10 and len(subjects["dev"]) == 10
    assert not subjects["train"] & subjects["test"]
    assert not subjects["train"] & subjects["dev"]
    assert not subjects["dev"] & subjects["test"]
    questions = [r["question"] for rows in w.splits.values() for r in rows]
    assert len(questions) == len(set(questions))


def test_every_answer_is_supported_by_the_corpus():
    w = build_world(WorldConfig(seed=1))
    by_id = {p["id"]: p["contents"] for p in w.passages}
    for rows in w.splits.values():
        for r in rows:
            meta, answer = r["metadata"], r["golden_answers"][0]
            docs = [by_id[i] for i in meta["support"]]
            assert len(docs) == QUESTION_TYPES[meta["type"]][1]
            assert meta["subject"] in docs[0]
            # the last supporting passage states the answer; a two-hop chain links through the
            # first passage's birthplace, which titles the second passage
            assert answer in docs[-1]
            if meta["hops"] == 2:
                city = docs[1].split("\n")[0].strip('"')
                assert f"born in {city}." in docs[0]
                assert f"is a city in {answer}." in docs[1]


def test_facts_are_not_guessable_from_names():
    # Facts are drawn independently of names: over 400 people the most common birthplace covers
    # well under a fifth of them (40 cities, expected share 1/40 = 2.5%).
    w = build_world(WorldConfig(seed=0))
    from collections import Counter

    top = Counter(p.birthplace for p in w.people).most_common(1)[0][1]
    assert top < 0.2 * len(w.people)


def test_bad_config_is_named():
    with pytest.raises(ValueError, match="question type"):
        build_world(WorldConfig(question_types=("favourite_colour",)))
    with pytest.raises(ValueError, match="test_people"):
        build_world(WorldConfig(num_people=20, dev_people=10, test_people=10))
