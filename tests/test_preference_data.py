import json

import pytest

from rlvr.data.preferences import (load_preference_data, load_rows, load_sft_data, sft_row_to_trajectory,
                                  split_preference_row, tokenize_preference_row)

USER = [{"role": "user", "content": "What is 2+3?"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_text_row(tiny_tokenizer):
    tok = tiny_tokenizer
    ex = tokenize_preference_row({"prompt": "Q: 2+3?", "chosen": " 5", "rejected": " 6"}, tok)
    assert ex.prompt_ids == tok.encode("Q: 2+3?", add_special_tokens=False)
    # plain-text completions get EOS so the model learns to stop
    assert ex.chosen_ids == tok.encode(" 5", add_special_tokens=False) + [tok.eos_token_id]
    assert ex.rejected_ids == tok.encode(" 6", add_special_tokens=False) + [tok.eos_token_id]
    ids, mask = ex.chosen_seq()
    assert ids == ex.prompt_ids + ex.chosen_ids
    assert mask == [0] * len(ex.prompt_ids) + [1] * len(ex.chosen_ids)


def test_conversational_row_uses_chat_template(tiny_tokenizer):
    tok = tiny_tokenizer
    row = {"prompt": USER, "chosen": [{"role": "assistant", "content": "<answer>5</answer>"}],
           "rejected": [{"role": "assistant", "content": "6"}]}
    ex = tokenize_preference_row(row, tok)
    assert tok.decode(ex.prompt_ids) == "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"
    # the response ends at EOS, like a sampled one; the template's trailing newline is not trained
    assert tok.decode(ex.chosen_ids) == "<answer>5</answer><|im_end|>"
    assert tok.decode(ex.rejected_ids) == "6<|im_end|>"


def test_implicit_prompt_is_the_shared_prefix():
    a = [{"role": "assistant", "content": "5"}]
    b = [{"role": "assistant", "content": "6"}]
    prompt, chosen, rejected = split_preference_row({"chosen": USER + a, "rejected": USER + b})
    assert (prompt, chosen, rejected) == (USER, a, b)


def test_truncation_keeps_prompt_end_and_response_start(tiny_tokenizer):
    ex = tokenize_preference_row({"prompt": "word " * 50, "chosen": "yes " * 50, "rejected": "no"},
                                 tiny_tokenizer, max_length=20)
    # prompt keeps its last 20 // 2 = 10 tokens, the chosen response the first 20 - 10 = 10
    assert len(ex.prompt_ids) == 10 and len(ex.chosen_ids) == 10
    assert len(ex.prompt_ids) + len(ex.rejected_ids) <= 20


def test_bad_rows_are_reported_by_file_and_line(tiny_tokenizer, tmp_path):
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"},
            {"prompt": "a", "chosen": "b"},  # no rejected
            {"prompt": "a", "chosen": "b", "rejected": "c"},
            {"prompt": "a", "chosen": "", "rejected": "c"}]  # empty chosen
    path = write_jsonl(tmp_path / "prefs.jsonl", rows)
    with pytest.raises(ValueError) as e:
        load_preference_data(str(path), tiny_tokenizer)
    msg = str(e.value)
    assert "prefs.jsonl" in msg and "2 bad row(s) of 4" in msg
    assert f"{path}:2: missing 'rejected'" in msg and f"{path}:4: 'chosen' is empty" in msg


def test_rows_of_mixed_shapes_are_still_named(tiny_tokenizer, tmp_path):
    # Arrow cannot give these one schema; the rows are read one by one and the bad one is named
    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"},
            {"prompt": "a", "chosen": 5, "rejected": "c"}]
    path = write_jsonl(tmp_path / "mixed.jsonl", rows)
    with pytest.raises(ValueError, match=r"mixed.jsonl:2: 'chosen' must be text"):
        load_preference_data(str(path), tiny_tokenizer)


def test_jsonl_and_parquet_give_the_same_pairs(tiny_tokenizer, tmp_path):
    import datasets

    rows = [{"prompt": USER, "chosen": [{"role": "assistant", "content": str(i)}],
             "rejected": [{"role": "assistant", "content": "no"}]} for i in range(5)]
    j = write_jsonl(tmp_path / "p.jsonl", rows)
    pq = tmp_path / "p.parquet"
    datasets.Dataset.from_list(rows).to_parquet(str(pq))
    a = load_preference_data(str(j), tiny_tokenizer, limit=3)
    b = load_preference_data(str(pq), tiny_tokenizer, limit=3)
    assert len(a) == len(b) == 3
    assert [x.chosen_ids for x in a] == [x.chosen_ids for x in b]


def test_unknown_source_names_the_choices():
    with pytest.raises(FileNotFoundError, match="synthetic_pref"):
        load_rows("nope.jsonl")


def test_synthetic_preference_task(tiny_tokenizer):
    pairs = load_preference_data("synthetic_pref", tiny_tokenizer, limit=20)
    assert len(pairs) == 20
    for p in pairs:
        assert tiny_tokenizer.decode(p.chosen_ids).startswith("<answer>")
        assert "<answer>" not in tiny_tokenizer.decode(p.rejected_ids)


def test_sft_prompt_completion(tiny_tokenizer):
    tok = tiny_tokenizer
    t = sft_row_to_trajectory({"prompt": "Q: 2+3?", "completion": " 5"}, tok)
    p = tok.encode("Q: 2+3?", add_special_tokens=False)
    c = tok.encode(" 5", add_special_tokens=False) + [tok.eos_token_id]
    assert t.token_ids == p + c
    assert t.loss_mask == [0] * len(p) + [1] * len(c)
    assert t.prompt_len == len(p)


def test_sft_messages_train_only_assistant_turns(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "<calc>2+3</calc>"},
            {"role": "user", "content": "<result>5</result>"}, {"role": "assistant", "content": "<answer>5</answer>"}]
    t = sft_row_to_trajectory({"messages": msgs}, tok)
    trained = tok.decode([i for i, m in zip(t.token_ids, t.loss_mask) if m])
    assert trained == "<calc>2+3</calc><|im_end|><answer>5</answer><|im_end|>"
    # the whole sequence is exactly the template's rendering
    assert tok.decode(t.token_ids) == tok.apply_chat_template(msgs, tokenize=False)


def test_sft_token_rows_and_errors(tiny_tokenizer, tmp_path):
    ok = {"token_ids": [5, 6, 7, 8], "loss_mask": [0, 0, 1, 0]}
    t = sft_row_to_trajectory(ok, tiny_tokenizer)
    assert t.loss_mask == [0, 0, 1, 0] and t.prompt_len == 2
    rows = [ok, {"token_ids": [5, 6], "loss_mask": [0]}, {"question": "x"},
            {"token_ids": [10**7], "loss_mask": [1]}]
    path = write_jsonl(tmp_path / "sft.jsonl", rows)
    with pytest.raises(ValueError) as e:
        load_sft_data(str(path), tiny_tokenizer)
    msg = str(e.value)
    assert "3 bad row(s) of 4" in msg
    assert f"{path}:2: 'loss_mask' (1) and 'token_ids' (2)" in msg
    assert f"{path}:3: expected 'prompt' + 'completion'" in msg
    assert f"{path}:4: 'token_ids' holds ids outside" in msg
