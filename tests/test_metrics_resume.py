"""``metrics.jsonl`` re-read on ``--resume`` (issue 14, item 4): a run killed in the middle of a
write leaves a torn last line, which is dropped with a warning; any other bad line names
``FILE:LINE``."""

import json
import logging

import pytest

from rlvr.learners.metrics import MetricsLogger, read_metrics


def _rows(*steps):
    return "".join(json.dumps({"step": s, "reward/mean": s / 10}) + "\n" for s in steps)


def test_resume_drops_a_torn_last_line_with_a_warning(tmp_path, caplog):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_rows(1, 2, 3) + '{"step": 4, "reward/mean": 0.4, "train/lo')  # killed mid-write
    with caplog.at_level(logging.WARNING, logger="rlvr.learners.metrics"):
        logger = MetricsLogger(tmp_path, progress=False, resume_step=2)
    [record] = [r for r in caplog.records if r.name == "rlvr.learners.metrics"]
    assert f"{path}:4: dropping a torn last line" in record.getMessage()
    logger.log(3, {"reward/mean": 0.5})
    logger.close()
    # steps after the checkpoint (3) and the torn line are gone; the resumed run's step 3 follows
    assert read_metrics(path) == [{"step": 1, "reward/mean": 0.1}, {"step": 2, "reward/mean": 0.2},
                                  {"step": 3, "reward/mean": 0.5}]


def test_a_torn_multibyte_character_is_a_torn_line_too(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(_rows(1).encode() + '{"note": "café'.encode()[:-1])  # cut inside "é"
    assert read_metrics(path) == [{"step": 1, "reward/mean": 0.1}]


@pytest.mark.parametrize("bad, why", [("{not json", "not a valid metrics row"),
                                      ("[1, 2]", "expected a JSON object per step, got list")])
def test_a_bad_line_before_the_last_names_file_and_line(tmp_path, bad, why):
    path = tmp_path / "metrics.jsonl"
    path.write_text(_rows(1) + "\n" + bad + "\n" + _rows(2))
    with pytest.raises(ValueError, match=rf"^{path}:3: {why}"):
        MetricsLogger(tmp_path, progress=False, resume_step=2)


def test_a_damaged_line_names_the_file_not_only_the_json_position(tmp_path):
    # the symptom was "rlvr train: error: Expecting ',' delimiter: line 1 column 29"
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1, "reward/mean": 0.1 "x": 1}\n' + _rows(2))
    with pytest.raises(ValueError) as e:
        read_metrics(path)
    assert str(e.value).startswith(f"{path}:1: not a valid metrics row (Expecting ',' delimiter")
