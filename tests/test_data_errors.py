"""Data errors speak like a compiler: ``FILE:LINE`` (1-based, blank lines counted) and what is
wrong, for bytes that are not UTF-8, for rows that cannot be read, and for rows that could never
be rewarded. Issue 14, items 1-3."""

import json
import logging

import pytest

from rlvr.data.preferences import load_rows
from rlvr.data.rows import DataError, read_located_rows
from rlvr.data.tasks import load_tasks
from rlvr.environments.qa_data import load_qa

LATIN1 = b'{"prompt": "caf\xe9?", "answer": "x"}\n'  # "café" written as Latin-1: byte 0xe9
GOOD = b'{"prompt": "q", "answer": "a"}\n'


# -- 1: bytes that are not UTF-8 -------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".json"])
def test_non_utf8_byte_is_named_by_file_line_and_position(tmp_path, suffix):
    f = tmp_path / f"b{suffix}"
    if suffix == ".jsonl":
        f.write_bytes(GOOD + LATIN1)
    else:
        f.write_bytes(b"[\n" + GOOD.rstrip() + b",\n" + LATIN1.rstrip() + b"\n]\n")
    with pytest.raises(DataError) as e:
        load_tasks(str(f))
    # line 2 of the .jsonl, line 3 of the .json list; '{"prompt": "caf' is 15 bytes, so 0xe9 is the 16th
    assert str(e.value).startswith(f"{f}:{2 if suffix == '.jsonl' else 3}: not UTF-8 text: byte 0xe9 "
                                   f"at byte 16 of the line")


def test_rlvr_verify_names_the_line_of_a_non_utf8_predictions_file(tmp_path, capsys):
    from rlvr.cli import main

    f = tmp_path / "b.jsonl"  # the reproduction
    f.write_bytes(b'{"completion":"<answer>a</answer>","answer":"a"}\n'
                  b'{"completion":"<answer>caf\xe9</answer>","answer":"x"}\n')
    assert main(["verify", "qa_em", "--input", str(f)]) == 2
    err = capsys.readouterr().err
    assert f"{f}:2: not UTF-8 text: byte 0xe9 at byte 27 of the line" in err, err
    assert "codec can't decode" not in err


def test_eval_and_preference_readers_name_the_non_utf8_line(tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_bytes(b'{"question": "q", "golden_answers": ["Paris"]}\n\n'
                   b'{"question": "caf\xe9", "golden_answers": ["Paris"]}\n')
    with pytest.raises(ValueError, match=rf"^{qa}:3: not UTF-8 text: byte 0xe9"):
        load_qa(str(qa))
    pref = tmp_path / "pref.jsonl"
    pref.write_bytes(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n'
                     b'{"prompt": "caf\xe9", "chosen": "b", "rejected": "c"}\n')
    with pytest.raises(ValueError, match=rf"^{pref}:2: not UTF-8 text: byte 0xe9"):
        load_rows(str(pref))


def test_a_utf8_byte_order_mark_is_not_an_error(tmp_path):
    f = tmp_path / "bom.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + GOOD)
    assert [t.answer for t in load_tasks(str(f))] == ["a"]


# -- 2: line numbers, not row numbers --------------------------------------------------------------

def _with_blank_lines(path, bad_row):
    # lines 1, 3 and 4 hold good rows, 2 and 5 are blank, the bad row is on line 6 (row index 3)
    good = json.dumps({"prompt": "q", "question": "q", "answer": "4", "golden_answers": ["Paris"],
                       "chosen": "b", "rejected": "c"})
    path.write_text(f"{good}\n\n{good}\n{good}\n   \n{json.dumps(bad_row)}\n")
    return path


def test_task_file_errors_give_the_line_as_an_editor_counts_it(tmp_path):
    f = _with_blank_lines(tmp_path / "t.jsonl", {"answer": "a"})
    with pytest.raises(DataError, match=rf"^{f}:6: no prompt: expected one of the fields 'messages', "
                                        rf"'prompt', 'question', 'problem', 'text'$"):
        load_tasks(str(f))
    f.write_text(f.read_text().replace('{"answer": "a"}', "{not json"))
    with pytest.raises(DataError, match=rf"^{f}:6: not valid JSON \(.* at column 2\)$"):
        load_tasks(str(f))


def test_task_ids_still_count_rows_from_zero(tmp_path):
    # ids name rows, not lines: eval predictions and checkpoints keyed by them stay valid
    f = _with_blank_lines(tmp_path / "ids.jsonl", {"prompt": "last", "answer": "z"})
    assert [t.id for t in load_tasks(str(f))] == ["ids:0", "ids:1", "ids:2", "ids:3"]


def test_json_list_rows_are_named_by_the_line_they_start_on(tmp_path):
    f = tmp_path / "rows.json"
    f.write_text('[\n  {"prompt": "q",\n   "answer": "a"},\n\n  {"prompt": "r", "answer": "b"},\n'
                 '  {"answer": "c"}\n]\n')
    assert [w for w, _ in read_located_rows(f)] == [f"{f}:2", f"{f}:5", f"{f}:6"]
    with pytest.raises(DataError, match=rf"^{f}:6: no prompt: expected one of"):
        load_tasks(str(f))
    f.write_text('[\n  {"prompt": "q", "answer": "a"},\n  {"prompt": }\n]')
    with pytest.raises(DataError, match=rf"^{f}:3: not valid JSON"):
        load_tasks(str(f))


def test_qa_benchmark_errors_give_the_line(tmp_path):
    f = _with_blank_lines(tmp_path / "qa.jsonl", {"question": "q"})
    with pytest.raises(ValueError, match=rf"^{f}:6: no 'golden_answers' field"):
        load_qa(str(f))


def test_preference_errors_give_the_line(tmp_path, tiny_tokenizer):
    from rlvr.data.preferences import load_preference_data

    f = _with_blank_lines(tmp_path / "prefs.jsonl", {"prompt": "a", "chosen": "b"})
    with pytest.raises(ValueError) as e:
        load_preference_data(str(f), tiny_tokenizer)
    assert f"\n  {f}:6: missing 'rejected'" in str(e.value)
    assert "1 bad row(s) of 4" in str(e.value)


def test_parquet_rows_are_counted_from_one(tmp_path):
    import datasets

    f = tmp_path / "t.parquet"
    datasets.Dataset.from_list([{"prompt": "q", "answer": "a"},
                                {"prompt": None, "answer": "b"}]).to_parquet(str(f))
    with pytest.raises(DataError, match=rf"^{f} row 2: no prompt: expected one of"):
        load_tasks(str(f))


# -- 3: rows that could never be rewarded ----------------------------------------------------------

def test_a_null_answer_is_refused_at_load(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"prompt": "What is 2+2?", "answer": "4"}\n'
                 '{"prompt": "What is 2+2?", "answer": null}\n\n'
                 '{"prompt": "What is 3+3?", "answer": "  "}\n')
    with pytest.raises(DataError) as e:
        load_tasks(str(f))
    msg = str(e.value)
    assert msg.startswith(f"{f}: 2 of 3 rows can never be rewarded:")
    assert f"\n  {f}:2: 'answer' is null: no verifier can reward" in msg
    assert f"\n  {f}:4: 'answer' is empty" in msg
    # `limit` stops before the bad rows: the first row alone loads
    assert [t.answer for t in load_tasks(str(f), 1)] == ["4"]


def test_an_answer_the_run_verifiers_cannot_read_is_refused(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text('{"prompt": "q", "answer": {"inputs": ["1"], "outputs": ["2"]}}\n')
    # no verifier named: an object may be a verifier's own answer form (the code tests here)
    assert len(load_tasks(str(f))) == 1
    assert len(load_tasks(str(f), verifiers={"code": 1.0})) == 1
    with pytest.raises(DataError, match=rf"^{f}:1: verifier 'qa_em' can never reward it: the answer "
                                        r"is an object without 'target'"):
        load_tasks(str(f), verifiers={"qa_em": 1.0, "format_r1": 0.1})
    # a verifier at weight 0 (logged, not rewarded) does not refuse rows
    assert len(load_tasks(str(f), verifiers={"qa_em": 0.0})) == 1
    f.write_text('{"prompt": "q", "answer": ["The"]}\n')
    with pytest.raises(DataError, match="every gold answer .* normalises to nothing"):
        load_tasks(str(f), verifiers=["qa_f1"])


def test_answers_optional_keeps_the_rows_with_one_warning(tmp_path, caplog):
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps({"prompt": f"q{i}", "answer": None if i else "a"}) + "\n"
                         for i in range(4)))
    with caplog.at_level(logging.WARNING, logger="rlvr.data.tasks"):
        tasks = load_tasks(str(f), answers_optional="the reward is a reward model")
    assert len(tasks) == 4
    [record] = [r for r in caplog.records if r.name == "rlvr.data.tasks"]
    assert "3 of 4 rows" in record.getMessage() and f"{f}:2" in record.getMessage()
    assert "kept because the reward is a reward model" in record.getMessage()


def test_rlvr_train_refuses_a_task_file_without_answers(tmp_path, capsys):
    from rlvr.cli import main

    f = tmp_path / "t.jsonl"
    f.write_text('{"prompt": "What is 2+2?", "answer": null}\n')
    rc = main(["train", "grpo_calculator", "--output-dir", str(tmp_path / "run"), "--run.steps", "1",
               "--run.progress", "false", "--data.train", str(f)])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert f"{f}:1: 'answer' is null" in err
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


# -- 4: no size bound at load (issue 14 item 4) ---------------------------------------------------

def _with_long_prompts(path):
    # lines 1 and 3 fit; line 2 is a 20,000-character prompt, line 4 a conversation of 9,000 × 2
    rows = [{"prompt": "What is 2+2?", "answer": "4"},
            {"prompt": "x" * 20_000, "answer": "1"},
            {"prompt": "What is 3+3?", "answer": "6"},
            {"messages": [{"role": "system", "content": "s" * 9_000},
                          {"role": "user", "content": "u" * 9_000}], "answer": "2"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_prompts_that_cannot_fit_the_token_budget_are_refused_at_load(tmp_path):
    from rlvr.data.tasks import CHARS_PER_TOKEN_BOUND, prompt_char_budget

    f = _with_long_prompts(tmp_path / "long.jsonl")
    budget = prompt_char_budget(512)  # rollout.max_total_tokens 512 × 16 = 8,192 characters
    assert budget == 512 * CHARS_PER_TOKEN_BOUND == 8192
    with pytest.raises(DataError) as e:
        load_tasks(str(f), max_prompt_chars=budget)
    msg = str(e.value)
    assert msg.startswith(f"{f}: 2 of 4 rows have a prompt too long for the token budget:\n"
                          f"  {f}:2: the prompt has 20,000 characters, over the 8,192")
    assert f"{f}:4: the prompt has 18,000 characters" in msg and "data.too_long: skip" in msg
    assert len(load_tasks(str(f))) == 4  # no budget given: no check


def test_too_long_skip_drops_them_with_one_warning(tmp_path, caplog):
    f = _with_long_prompts(tmp_path / "long.jsonl")
    with caplog.at_level(logging.WARNING, logger="rlvr.data.tasks"):
        tasks = load_tasks(str(f), max_prompt_chars=8192, too_long="skip")
    assert [t.id for t in tasks] == ["long:0", "long:2"]  # ids keep the rows' places
    [record] = [r for r in caplog.records if r.name == "rlvr.data.tasks"]
    assert f"skipped 2 of 4 rows whose prompt cannot fit the token budget (first: {f}:2:" in \
        record.getMessage()
    with pytest.raises(ValueError, match="too_long must be one of refuse, skip, got 'drop'"):
        load_tasks(str(f), max_prompt_chars=8192, too_long="drop")


def test_data_too_long_is_a_typed_setting():
    from rlvr.core.config import load_config

    assert load_config().data.too_long == "refuse"
    assert load_config(None, ["--data.too_long", "skip"]).data.too_long == "skip"
    with pytest.raises(ValueError, match="data.too_long"):
        load_config(None, ["--data.too_long", "drop"])


# -- data sources named by their key; hub datasets as RL tasks ------------------------------------

def test_a_missing_data_file_names_its_key(tmp_path, capsys):
    from rlvr.cli import main

    rc = main(["train", "grpo_calculator", "--output-dir", str(tmp_path / "run"),
               "--data.train", "x.jsonl"])
    err = capsys.readouterr().err
    assert rc == 2 and "data.train: no such file 'x.jsonl'" in err, err
    rc = main(["train", "grpo_calculator", "--output-dir", str(tmp_path / "run"),
               "--data.eval", str(tmp_path / "held_out.jsonl")])
    assert rc == 2 and f"data.eval: no such file '{tmp_path / 'held_out.jsonl'}'" in \
        capsys.readouterr().err
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything ran


def test_hf_dataset_as_rl_tasks(monkeypatch):
    # tests cannot download: datasets.load_dataset is replaced by a local table of the same rows
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(name, split=None, **kw):
        calls.append((name, split))
        return datasets.Dataset.from_list([{"problem": "1+1?", "solution": "\\boxed{2}"},
                                           {"problem": "2+2?", "solution": None}])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    with pytest.raises(DataError, match=r"^hf:owner/math_rows:test row 2: 'answer' is null"):
        load_tasks("hf:owner/math_rows:test")
    assert calls == [("owner/math_rows", "test")]
    [task] = load_tasks("hf:owner/math_rows", limit=1)
    assert calls[-1] == ("owner/math_rows", "train")  # the default split
    assert task.id == "math_rows:0" and task.prompt == "1+1?" and task.answer == "\\boxed{2}"
