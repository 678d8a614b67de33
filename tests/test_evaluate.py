"""Evaluation: hand-computed EM / F1 / cover-EM, resume after an interruption, and `rlvr eval`."""

import json

import pytest

from rlvr.core.config import EnvConfig, RolloutConfig
from rlvr.eval.benchmarks import evaluate, extract_prediction, format_table, read_predictions
from rlvr.retrieval.base import Hit
from rlvr.retrieval.corpus import Passage
from rlvr.rollout.episodes import make_env_factory
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task

BEATLES = Passage.from_contents("p1", '"The Beatles"\nThe Beatles were a rock band from Liverpool.')


class OneDocIndex:
    def __init__(self):
        self.calls = []

    def search(self, queries, k):
        self.calls.append(list(queries))
        return [[Hit(BEATLES, 1.0)] for _ in queries]


# question → what the policy writes on its first turn (after "Question:")
SCRIPT = {
    "capital of France?": "<answer> Paris </answer>",
    "largest city of the US?": "<answer> New York </answer>",
    "capital of Japan?": "I am not sure",  # never answers: the turn runs out of tokens
    "band of Lennon?": "<search> Lennon band </search>",  # searches, then answers (below)
    "year of the fall of the Berlin Wall?": "<answer>1990</answer>",
}


def policy(context: str) -> str:
    after = context.split("Question: ")[-1]
    if "<information>" in after:
        return "<answer> The Beatles band </answer>"
    return SCRIPT[after.split("\n")[0]]


def datasets():
    return {
        "a": [Task("capital of France", ["Paris"], {"dataset": "a"}, id="a:0"),
              Task("largest city of the US", ["New York City", "NYC"], {"dataset": "a"}, id="a:1"),
              Task("capital of Japan", ["Tokyo"], {"dataset": "a"}, id="a:2")],
        "b": [Task("band of Lennon", ["the Beatles"], {"dataset": "b"}, id="b:0"),
              Task("year of the fall of the Berlin Wall", ["1990"], {"dataset": "b"}, id="b:1")],
    }


CFG = RolloutConfig(max_turns=3, max_new_tokens=48, max_total_tokens=1024, max_obs_tokens=128)

# Hand-computed (SQuAD normalisation: lower case, no punctuation, no articles):
#   a:0 "Paris" vs [Paris]                 EM 1, F1 1,   cover 1
#   a:1 "New York" vs [New York City, NYC] EM 0, F1 = 2·(2/2·2/3)/(2/2+2/3) = 0.8, cover 0
#   a:2 no answer                          EM 0, F1 0,   cover 0
#   b:0 "The Beatles band" vs [the Beatles] → "beatles band" vs "beatles":
#                                          EM 0, F1 = 2·(1/2·1/1)/(1/2+1) = 2/3, cover 1
#   b:1 "1990" vs [1990]                   EM 1, F1 1,   cover 1
#   a: EM 1/3, F1 (1+0.8+0)/3 = 0.6, cover 1/3;  b: EM 1/2, F1 (2/3+1)/2 = 5/6, cover 1
#   average over datasets: EM (1/3+1/2)/2 = 5/12, F1 (0.6+5/6)/2 = 43/60, cover (1/3+1)/2 = 2/3
EXPECTED = {"a": {"em": 1 / 3, "f1": 0.6, "cover_em": 1 / 3, "answered": 2 / 3},
            "b": {"em": 0.5, "f1": 5 / 6, "cover_em": 1.0, "answered": 1.0}}
EXPECTED_AVG = {"em": 5 / 12, "f1": 43 / 60, "cover_em": 2 / 3}


def run_eval(tok, engine, index, path=None, batch_size=2):
    factory = make_env_factory(EnvConfig(name="search", settings={"index": index}))
    return evaluate(None, tok, datasets(), factory, cfg=CFG, batch_size=batch_size,
                    predictions_path=path, progress=False, engine=engine)


def check_numbers(result):
    for name, exp in EXPECTED.items():
        for key, value in exp.items():
            assert result["datasets"][name][key] == pytest.approx(value), (name, key)
    for key, value in EXPECTED_AVG.items():
        assert result["average"][key] == pytest.approx(value), key
    assert result["datasets"]["a"]["n"] == 3 and result["num_examples"] == 5


def test_numbers_match_a_hand_computed_fixture(tiny_tokenizer, tmp_path):
    index = OneDocIndex()
    path = tmp_path / "pred.jsonl"
    result = run_eval(tiny_tokenizer, ScriptedEngine(tiny_tokenizer, policy), index, path)
    check_numbers(result)
    assert index.calls == [["Lennon band"]]
    recs = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["id"] for r in recs] == ["a:0", "a:1", "a:2", "b:0", "b:1"]
    b0 = recs[3]
    assert b0["prediction"] == "The Beatles band" and b0["golden_answers"] == ["the Beatles"]
    assert b0["searches"] == 1 and b0["em"] == 0.0 and b0["cover_em"] == 1.0
    assert "<information>Doc 1(Title: \"The Beatles\")" in b0["trajectory"]
    assert b0["trajectory"].endswith("<answer> The Beatles band </answer>")
    assert "Question: band of Lennon?" in b0["prompt"]
    assert recs[2]["prediction"] is None and recs[2]["finish_reason"] == "max_new_tokens"
    table = format_table(result)
    assert "average" in table and "0.417" in table  # 5/12 = 0.4167


class InterruptingEngine(ScriptedEngine):
    """Dies (like Ctrl-C) on its n-th generate call."""

    def __init__(self, tok, policy, die_on_call):
        super().__init__(tok, policy)
        self.die_on_call = die_on_call

    def generate(self, prompts, params):
        if len(self.calls) + 1 == self.die_on_call:
            raise KeyboardInterrupt
        return super().generate(prompts, params)


def test_resume_after_interruption_skips_finished_examples(tiny_tokenizer, tmp_path):
    tok = tiny_tokenizer
    path = tmp_path / "pred.jsonl"
    # batch_size 2: dataset a is batches [a:0, a:1] (1 generate call: both answer at once) and
    # [a:2]; the interruption hits the first call of the second batch, after a:0 and a:1 were saved
    with pytest.raises(KeyboardInterrupt):
        run_eval(tok, InterruptingEngine(tok, policy, die_on_call=2), OneDocIndex(), path)
    assert list(read_predictions(path)) == ["a:0", "a:1"]
    with path.open("a") as f:
        f.write('{"id": "a:2", "em": 1.0, "pred')  # a write cut off mid-line
    engine = ScriptedEngine(tok, policy)
    result = run_eval(tok, engine, OneDocIndex(), path)
    check_numbers(result)
    first_turn_prompts = [tok.decode(p) for call in engine.calls for p in call
                          if "<information>" not in tok.decode(p).split("Question:")[-1]]
    asked = sorted(p.split("Question: ")[-1].split("?")[0] for p in first_turn_prompts)
    assert asked == ["band of Lennon", "capital of Japan", "year of the fall of the Berlin Wall"]
    assert sorted(read_predictions(path)) == ["a:0", "a:1", "a:2", "b:0", "b:1"]
    # a third run has nothing left to generate
    engine3 = ScriptedEngine(tok, policy)
    check_numbers(run_eval(tok, engine3, OneDocIndex(), path))
    assert engine3.calls == []


# -- untagged answers ------------------------------------------------------------------------------

def plain_policy(eos):
    # question → first turn; after retrieval the Lennon question answers in plain text too
    script = {
        "capital of France?": "Paris." + eos,                        # right, untagged
        "capital of Japan?": "<think>hmm</think> Kyoto" + eos,        # wrong, untagged
        "band of Lennon?": "<search> Lennon band </search>",
        "largest city of the US?": "<answer> New York </answer>",     # tagged
        "year of the fall of the Berlin Wall?": "I am not sure",       # cut by the token budget
    }

    def policy(context):
        after = context.split("Question: ")[-1]
        if "<information>" in after:
            return "It was the Beatles" + eos                         # right (cover), untagged
        return script[after.split("\n")[0]]
    return policy


def plain_datasets():
    return {"a": [Task("capital of France", ["Paris"], id="a:0"),
                  Task("capital of Japan", ["Tokyo"], id="a:1"),
                  Task("band of Lennon", ["the Beatles"], id="a:2"),
                  Task("largest city of the US", ["New York City", "NYC"], id="a:3"),
                  Task("year of the fall of the Berlin Wall", ["1989"], id="a:4")]}


@pytest.mark.parametrize("answer_tag", ["required", "optional"])
def test_untagged_answers_are_counted_and_optionally_scored(tiny_tokenizer, tmp_path, answer_tag):
    tok = tiny_tokenizer
    factory = make_env_factory(EnvConfig(name="search", settings={"index": OneDocIndex()}))
    result = evaluate(None, tok, plain_datasets(), factory, cfg=CFG, batch_size=5,
                      predictions_path=tmp_path / "p.jsonl", progress=False,
                      engine=ScriptedEngine(tok, plain_policy(tok.eos_token)), answer_tag=answer_tag)
    recs = read_predictions(tmp_path / "p.jsonl")
    # the text taken: the last turn's own text (not the invalid-action reminder after it), <think>
    # removed, stripped; none for a tagged answer or a last turn cut by max_new_tokens
    assert [recs[f"a:{i}"]["untagged_answer"] for i in range(5)] == [
        "Paris.", "Kyoto", "It was the Beatles", None, None]
    assert recs["a:0"]["finish_reason"] == "max_turns" and "invalid" in recs["a:0"]["trajectory"]
    assert recs["a:4"]["finish_reason"] == "max_new_tokens"
    a = result["datasets"]["a"]
    # 3 untagged of 5; cover-EM on them: Paris 1, Kyoto 0, "it was beatles" ⊇ "beatles" 1 → 2/3
    assert a["untagged"] == 3 and a["untagged_cover_em"] == pytest.approx(2 / 3)
    assert result["average"]["untagged"] == 3
    if answer_tag == "required":
        # only "New York" vs [New York City, NYC] counts: EM 0, F1 0.8 → means over 5
        expected = {"em": 0.0, "f1": 0.8 / 5, "cover_em": 0.0, "answered": 1 / 5}
        note = "3 of 5, cover-EM on them 0.667; scored 0 as Search-R1 rules"
    else:
        # "Paris." EM 1 F1 1; "Kyoto" 0 0; "it was beatles" vs "beatles": EM 0,
        # F1 = 2·(1/3·1)/(1/3+1) = 0.5, cover 1; "New York" F1 0.8; the truncated one 0
        expected = {"em": 1 / 5, "f1": (1 + 0.5 + 0.8) / 5, "cover_em": 2 / 5, "answered": 4 / 5}
        note = "3 of 5, cover-EM on them 0.667; scored as the answer (--answer-tag optional)"
        assert recs["a:0"]["prediction"] == "Paris." and recs["a:0"]["em"] == 1.0
    for key, value in expected.items():
        assert a[key] == pytest.approx(value), key
    assert note in format_table(result)


def test_untagged_answer_text():
    from rlvr.eval.benchmarks import untagged_answer

    assert untagged_answer("<think>a</think>\n Paris \n") == "Paris"
    assert untagged_answer("<search>q</search><information></information> so, Paris") == "so, Paris"
    assert untagged_answer("<answer>Paris</answer>") is None        # tagged: not untagged
    assert untagged_answer("<search> q </search>") is None           # the last turn searched
    assert untagged_answer("<think>still thinking") is None          # unfinished reasoning
    assert untagged_answer("<think>a</think>  ") is None              # nothing stated


def test_extract_prediction_ignores_retrieved_answers():
    assert extract_prediction("<search>q</search><information><answer>x</answer></information>") is None
    assert extract_prediction("<answer> a </answer> then <answer> b </answer>") == "b"


def test_cli_end_to_end_on_a_tiny_model(tmp_path, capsys):
    from rlvr.cli import main
    from rlvr.core.models import save_tiny
    from rlvr.retrieval.bm25 import BM25Index

    model_dir = save_tiny(tmp_path / "model", hidden_size=32, num_layers=1)
    passages = [Passage.from_title_text(f"p{i}", t, x) for i, (t, x) in enumerate([
        ("Paris", "Paris is the capital of France."), ("Tokyo", "Tokyo is the capital of Japan."),
        ("Hamlet", "Hamlet is a play by William Shakespeare.")])]
    BM25Index.build(passages).save(tmp_path / "index")
    data = tmp_path / "mini.jsonl"
    data.write_text("".join(json.dumps({"question": q, "golden_answers": a}) + "\n" for q, a in [
        ("capital of France?", ["Paris"]), ("who wrote Hamlet?", ["Shakespeare"]),
        ("capital of Japan?", ["Tokyo"])]))
    out = tmp_path / "out"
    argv = ["eval", "--model", str(model_dir), "--env", "search", "--data", str(data),
            "--index", str(tmp_path / "index"), "--limit", "2", "--output-dir", str(out),
            "--max-new-tokens", "8", "--max-total-tokens", "512", "--max-turns", "2",
            "--batch-size", "2", "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    recs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [r["id"] for r in recs] == ["mini:0", "mini:1"]
    # the report's numbers are the means of the saved per-example scores
    assert report["datasets"]["mini"]["n"] == 2
    assert report["datasets"]["mini"]["em"] == pytest.approx(sum(r["em"] for r in recs) / 2)
    assert report["average"]["em"] == report["datasets"]["mini"]["em"]
    assert (out / "em.png").stat().st_size > 1000 and "average" in (out / "results.txt").read_text()
    assert "untagged answers (no <answer> tag): " in (out / "results.txt").read_text()
    assert report["answer_tag"] == "required" and "untagged" in report["average"]
    assert "average EM" in capsys.readouterr().out
    # a rerun resumes (nothing left), and a different model in the same directory is refused
    assert main(argv) == 0
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 2
    assert main(argv[:2] + ["tiny"] + argv[3:]) == 2
    assert "different evaluation" in capsys.readouterr().err
    # a retrieving environment without an index is a clear usage error
    assert main(["eval", "--model", str(model_dir), "--data", str(data)]) == 2
    assert "--index DIR or --retriever URL" in capsys.readouterr().err

    # scoring untagged answers changes the numbers: not resumed into the same directory
    assert main(argv + ["--answer-tag", "optional"]) == 2
    assert "different evaluation" in capsys.readouterr().err
    # a device that is not there is named by the flag that asked for it
    if not __import__("torch").cuda.is_available():
        assert main(argv[:-3] + ["--output-dir", str(tmp_path / "gpu"), "--device", "cuda"]) == 2
        assert "--device is 'cuda' but no CUDA device is visible" in capsys.readouterr().err


@pytest.mark.parametrize("env, where", [("search_rag", "index"), ("search_rag", "retriever"),
                                        ("search", "retriever")])
def test_cli_retrieving_envs_with_an_index_or_a_server(tmp_path, env, where):
    from rlvr.cli import main
    from rlvr.core.models import save_tiny
    from rlvr.retrieval.bm25 import BM25Index
    from rlvr.retrieval.server import running_server

    model_dir = save_tiny(tmp_path / "model", hidden_size=32, num_layers=1)
    index = BM25Index.build([Passage.from_title_text(f"p{i}", t, x) for i, (t, x) in enumerate([
        ("Paris", "Paris is the capital of France."), ("Tokyo", "Tokyo is the capital of Japan."),
        ("Hamlet", "Hamlet is a play by William Shakespeare.")])])
    index.save(tmp_path / "index")
    files = {"alpha": [("capital of France?", ["Paris"]), ("capital of Japan?", ["Tokyo"])],
             "beta": [("who wrote Hamlet?", ["Shakespeare"])]}
    for name, rows in files.items():
        (tmp_path / f"{name}.jsonl").write_text("".join(
            json.dumps({"question": q, "golden_answers": a}) + "\n" for q, a in rows))
    out = tmp_path / "out"
    argv = ["eval", "--model", str(model_dir), "--env", env, "--data",
            f"{tmp_path / 'alpha.jsonl'},{tmp_path / 'beta.jsonl'}", "--topk", "1",
            "--output-dir", str(out), "--max-new-tokens", "8", "--max-total-tokens", "512",
            "--max-turns", "2", "--batch-size", "2", "--device", "cpu", "--no-progress"]
    if where == "index":
        assert main(argv + ["--index", str(tmp_path / "index")]) == 0
    else:
        with running_server(index) as base:
            assert main(argv + ["--retriever", f"{base}/retrieve"]) == 0

    report = json.loads((out / "report.json").read_text())
    keys = {"n", "em", "f1", "cover_em", "answered", "searches", "untagged", "untagged_cover_em"}
    assert set(report["datasets"]) == {"alpha", "beta"}
    assert all(set(m) == keys for m in report["datasets"].values()) and set(report["average"]) == keys
    assert [report["datasets"][d]["n"] for d in ("alpha", "beta")] == [2, 1]
    assert report["env"] == env and report["num_examples"] == 3
    setting = "index_dir" if where == "index" else "retriever_url"
    assert list(report["settings"]) == [setting, "topk"]
    recs = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert [(r["id"], r["dataset"]) for r in recs] == [("alpha:0", "alpha"), ("alpha:1", "alpha"),
                                                        ("beta:0", "beta")]
    assert all({"prediction", "golden_answers", "em", "f1", "cover_em", "searches", "prompt",
                "trajectory"} <= set(r) for r in recs)
    assert all(r["error"] is None for r in recs), [r["error"] for r in recs]
    # the report's numbers are the means of the saved per-example scores
    assert report["datasets"]["alpha"]["em"] == pytest.approx((recs[0]["em"] + recs[1]["em"]) / 2)
    if env == "search_rag":  # the passages came from the index or through the server
        assert 'Doc 1(Title: "Paris") Paris is the capital of France.' in recs[0]["prompt"]
        assert 'Doc 1(Title: "Hamlet")' in recs[2]["prompt"] and "<information>" not in recs[2]["prompt"]
        assert [r["searches"] for r in recs] == [1, 1, 1] and report["average"]["searches"] == 1.0
        assert all(r["metrics"]["retrieval_errors"] == 0 for r in recs)
