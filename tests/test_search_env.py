"""The search environments through the real episode loop with a scripted engine and a fake index."""

import pytest

from rlvr.core.config import RolloutConfig
from rlvr.environments import search as search_mod
from rlvr.environments.search import (INVALID_ACTION_MESSAGE, SEARCH_R1_TEMPLATE, DirectEnv,
                                      RagEnv, SearchEnv, information_block, parse_action,
                                      search_metrics, strip_information)
from rlvr.retrieval.base import Hit, RetrievalError, format_passages
from rlvr.retrieval.corpus import Passage
from rlvr.rollout.episodes import collect, make_env_factory
from rlvr.core.config import EnvConfig
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task

DOCS = {
    "france": Passage.from_contents("d1", '"Paris"\nParis is the capital of France.'),
    "japan": Passage.from_contents("d2", '"Tokyo"\nTokyo is the capital of Japan.'),
}


class FakeIndex:
    """Returns the passage whose key occurs in the query; records every batched call."""

    def __init__(self, fail: bool = False):
        self.calls: list[tuple[list[str], int]] = []
        self.fail = fail

    def search(self, queries, k):
        self.calls.append((list(queries), k))
        if self.fail:
            raise RetrievalError("server at http://127.0.0.1:9 refused the connection")
        return [[Hit(p, 1.0) for key, p in DOCS.items() if key in q.lower()][:k] for q in queries]


def search_policy(context: str) -> str:
    # first turn: search for the country in the question; after <information>: answer from it
    # (the instruction itself names <information>, so only the text after "Question:" counts)
    after = context.split("Question:")[-1]
    if "<information>" not in after:
        country = "france" if "France" in after else "japan"
        return f"<think>I need to look it up.</think><search> capital of {country} </search> junk"
    city = "Paris" if "Paris is" in after else "Tokyo"
    return f"<think>Found it.</think><answer> {city} </answer>"


def factory(**settings):
    return make_env_factory(EnvConfig(name="search", settings=settings))


def run(tok, policy, tasks, env_factory, cfg=None):
    cfg = cfg or RolloutConfig(max_turns=4, max_new_tokens=64, max_total_tokens=1024,
                               max_obs_tokens=256)
    return collect(ScriptedEngine(tok, policy), tok, env_factory, tasks, samples_per_prompt=1,
                   cfg=cfg, greedy=True)


TASKS = [Task("What is the capital of France", ["Paris"], id="q:0"),
         Task("What is the capital of Japan?", ["Tokyo"], id="q:1"),
         Task("Which city is the capital of France?", ["Paris"], id="q:2")]


def test_search_trajectory_masks_keep_retrieved_text_out_of_the_loss(tiny_tokenizer):
    tok = tiny_tokenizer
    index = FakeIndex()
    trajs = run(tok, search_policy, TASKS, factory(index=index, topk=2))
    # all three searches of turn 1 went to the index as one batched call with topk 2
    assert index.calls == [(["capital of france", "capital of japan", "capital of france"], 2)]
    tr = trajs[0]
    assert tr.finish_reason == "done" and tr.error is None and not tr.truncated
    obs = information_block(format_passages([Hit(DOCS["france"], 1.0)]))
    assert obs == '\n\n<information>Doc 1(Title: "Paris") Paris is the capital of France.</information>\n\n'
    sampled_text = ("<think>I need to look it up.</think><search> capital of france </search>"
                    "<think>Found it.</think><answer> Paris </answer>")
    completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
    assert completion == ("<think>I need to look it up.</think><search> capital of france </search>"
                          + obs + "<think>Found it.</think><answer> Paris </answer>")
    sampled = [t for t, m in zip(tr.token_ids, tr.loss_mask) if m]
    assert tok.decode(sampled, skip_special_tokens=False) == sampled_text
    masked = [t for t, m in zip(tr.token_ids[tr.prompt_len:], tr.loss_mask[tr.prompt_len:]) if not m]
    assert tok.decode(masked, skip_special_tokens=False) == obs  # exactly the observation, nothing else
    # the first turn's span ends at the stop string, its observation right after
    t0 = tr.turns[0]
    assert tok.decode(tr.token_ids[t0.action_end:t0.observation_end]) == obs
    assert [c.name for c in tr.tool_calls] == ["search", "answer"]
    assert tr.info["searches"] == 1 and tr.info["answered"] == 1 and tr.info["invalid_actions"] == 0
    assert [t.info["searches"] for t in trajs] == [1, 1, 1]


def test_reward_is_qa_em_on_the_policy_text(tiny_tokenizer):
    pytest.importorskip("rlvr.verifiers.qa")
    trajs = run(tiny_tokenizer, search_policy, TASKS, factory(index=FakeIndex()))
    # q:0 France→Paris ✓, q:1 Japan→Tokyo ✓, q:2 France→Paris ✓
    assert [t.reward for t in trajs] == [1.0, 1.0, 1.0] and all(t.correct for t in trajs)
    env = SearchEnv(index=FakeIndex())
    task = Task("Capital of France?", ["Paris"], id="x")
    # an <answer> inside retrieved passages is never the policy's answer
    leaked = "<search> x </search>\n\n<information>Doc 1(Title: a) <answer> Paris </answer></information>"
    assert env.score(leaked, task).reward == 0.0
    assert env.score(leaked + "<answer> Paris </answer>", task).reward == 1.0
    # nor is the "<answer> and </answer>" of the environment's own invalid-action reminder
    gold_and = Task("Conjunction?", ["and"], id="y")
    assert env.score("I do not know." + INVALID_ACTION_MESSAGE, gold_and).reward == 0.0
    assert env.score("hm" + INVALID_ACTION_MESSAGE + "<answer> and </answer>", gold_and).reward == 1.0


def test_format_shaping_through_verifier_weights(tiny_tokenizer):
    pytest.importorskip("rlvr.verifiers.format")
    shaped = factory(index=FakeIndex(), verifiers={"qa_em": 1.0, "format_search": 0.2})
    [tr] = run(tiny_tokenizer, search_policy, TASKS[:1], shaped)
    # think, search, information, think, answer is Search-R1's grammar: 1.0·1 + 0.2·1 = 1.2
    assert tr.reward_parts == {"qa_em": 1.0, "format_search": 1.0}
    assert tr.reward == pytest.approx(1.2) and tr.correct is True
    # a bare answer after untagged text: right answer, broken format: 1.0·1 + 0.2·0 = 1.0
    [tr] = run(tiny_tokenizer, lambda ctx: "Paris it is. <answer> Paris </answer>", TASKS[:1], shaped)
    assert tr.reward_parts == {"qa_em": 1.0, "format_search": 0.0} and tr.reward == 1.0


def test_invalid_action_gets_search_r1_message_and_is_counted(tiny_tokenizer):
    tok = tiny_tokenizer

    def policy(context):
        if "Let me try again" not in context:
            return "I think the answer is obvious</search>"  # a closing tag with no <search>
        return "<answer> Paris </answer>"

    [tr] = run(tok, policy, TASKS[:1], factory(index=FakeIndex()))
    assert tr.finish_reason == "done"
    completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
    assert completion == ("I think the answer is obvious</search>" + INVALID_ACTION_MESSAGE
                          + "<answer> Paris </answer>")
    assert INVALID_ACTION_MESSAGE.startswith("\nMy previous action is invalid. If I want to search")
    assert tr.info["invalid_actions"] == 1 and tr.info["searches"] == 0
    assert tr.tool_calls[0].valid is False
    # per batch: this episode (2 actions, 1 invalid, 0 searches) and a searching one (2 valid
    # actions, 1 search): valid ratio (4 - 1) / 4 = 0.75, searches (0 + 1) / 2 = 0.5, both answered
    [good] = run(tok, search_policy, TASKS[:1], factory(index=FakeIndex()))
    assert search_metrics([tr, good]) == {"env/searches": 0.5, "env/valid_action_ratio": 0.75,
                                          "env/answered": 1.0, "env/retrieval_errors": 0.0}


def test_empty_query_is_invalid_and_never_reaches_the_index():
    index = FakeIndex()
    env = SearchEnv(index=index)
    res = env.step("<search>   </search>")
    assert res.observation == INVALID_ACTION_MESSAGE and not res.done and index.calls == []
    assert env.metrics()["invalid_actions"] == 1


def test_retrieval_failure_is_an_error_observation_not_a_crash(tiny_tokenizer):
    tok = tiny_tokenizer
    trajs = run(tok, search_policy, TASKS[:2], factory(index=FakeIndex(fail=True)))
    for tr in trajs:
        assert tr.error is None and tr.finish_reason == "done"  # the episode went on and answered
        completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
        assert "<information>Search failed (RetrievalError: server at http://127.0.0.1:9" in completion
        assert tr.info["retrieval_errors"] == 1 and tr.tool_calls[0].error


def test_long_observation_is_cut_keeping_the_closing_tag(tiny_tokenizer):
    tok = tiny_tokenizer
    long_doc = Passage.from_contents("d9", '"France"\n' + "France is a country in Europe. " * 40)

    class LongIndex(FakeIndex):
        def search(self, queries, k):
            return [[Hit(long_doc, 1.0)] for _ in queries]

    cfg = RolloutConfig(max_turns=4, max_new_tokens=64, max_total_tokens=1024, max_obs_tokens=24)
    [tr] = run(tok, search_policy, TASKS[:1], factory(index=LongIndex()), cfg)
    t0 = tr.turns[0]
    obs_ids = tr.token_ids[t0.action_end:t0.observation_end]
    assert len(obs_ids) == 24
    obs = tok.decode(obs_ids, skip_special_tokens=False)
    assert obs.startswith("\n\n<information>Doc 1(Title: \"France\") France is")
    assert obs.endswith("</information>\n\n")
    assert tr.info["observations_truncated"] == 1
    assert not any(tr.loss_mask[t0.action_end:t0.observation_end])


def test_prompt_is_search_r1_template_and_configurable():
    env = SearchEnv(index=FakeIndex())
    [msg] = env.reset(Task("  who wrote hamlet ", ["Shakespeare"], id="a"))
    assert msg["role"] == "user"
    assert msg["content"] == SEARCH_R1_TEMPLATE.replace("{question}", "who wrote hamlet?")
    assert msg["content"].startswith("Answer the given question. You must conduct reasoning inside "
                                     "<think> and </think> first every time you get new information.")
    custom = SearchEnv(index=FakeIndex(), template='Q: {question} {"json": 1}', chat=False)
    assert custom.reset(Task("x?", ["y"], id="b")) == 'Q: x? {"json": 1}'
    with pytest.raises(ValueError, match="question"):
        SearchEnv(index=FakeIndex(), template="no placeholder")
    assert SearchEnv.stop_strings == ["</search>", "</answer>"]


def test_retriever_settings_are_checked():
    with pytest.raises(ValueError, match="exactly one of"):
        SearchEnv()
    with pytest.raises(ValueError, match="exactly one of"):
        SearchEnv(index=FakeIndex(), retriever_url="http://127.0.0.1:1/retrieve")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        SearchEnv(index_dir="/nonexistent/index")
    with pytest.raises(ValueError, match=r"unknown setting 'top_k'; valid settings: .*topk \(int\)"):
        SearchEnv(index=FakeIndex(), top_k=3)
    with pytest.raises(ValueError, match=r"setting 'topk' must be int, got str '3'"):
        factory(index=FakeIndex(), topk="3")


def test_index_is_loaded_once_per_path(tmp_path, monkeypatch):
    loads = []
    monkeypatch.setattr(search_mod, "load_index", lambda d: loads.append(d) or FakeIndex())
    monkeypatch.setattr(search_mod, "_INDEXES", {})
    a = SearchEnv(index_dir=str(tmp_path))
    b = SearchEnv(index_dir=str(tmp_path) + "/.")
    assert a.retriever is b.retriever and len(loads) == 1


def test_parse_action():
    assert parse_action("<think>x</think><search> q1 </search>") == ("search", "q1")
    assert parse_action("<answer> Paris </answer>") == ("answer", "Paris")
    assert parse_action("<think>use <search> tags</think><search>q</search>") == ("search", "q")
    assert parse_action("no tags </answer>") == (None, "")
    assert strip_information("a<information>b</information>c<information>cut") == \
        "a<information></information>c<information>"


def test_direct_and_rag_baselines(tiny_tokenizer):
    tok = tiny_tokenizer
    direct = make_env_factory(EnvConfig(name="search_direct"))
    [tr] = run(tok, lambda ctx: "<think>hm</think><answer> Paris </answer> more", TASKS[:1], direct)
    prompt = tok.decode(tr.token_ids[:tr.prompt_len])
    assert "<search>" not in prompt and "capital of France?" in prompt
    assert tr.finish_reason == "done" and tr.info["answered"] == 1 and len(tr.turns) == 1

    index = FakeIndex()
    rag = make_env_factory(EnvConfig(name="search_rag", settings={"index": index, "topk": 1}))
    trajs = run(tok, lambda ctx: "<answer> Paris </answer>", TASKS[:2], rag)
    assert index.calls == [(["What is the capital of France?", "What is the capital of Japan?"], 1)]
    prompt = tok.decode(trajs[0].token_ids[:trajs[0].prompt_len])
    assert 'Doc 1(Title: "Paris") Paris is the capital of France.' in prompt
    assert trajs[0].info["searches"] == 1
    # a failing retriever still yields a prompt, flagged in the metrics
    env = RagEnv(index=FakeIndex(fail=True))
    assert "retrieval failed" in env.reset(TASKS[0])[0]["content"]
    assert env.metrics()["retrieval_errors"] == 1
    assert DirectEnv().step("nothing</answer>").done


def test_rag_retrieves_for_the_whole_batch_in_one_call(tiny_tokenizer):
    tok = tiny_tokenizer
    index = FakeIndex()
    rag = make_env_factory(EnvConfig(name="search_rag", settings={"index": index, "topk": 2}))
    cfg = RolloutConfig(max_turns=1, max_new_tokens=16, max_total_tokens=1024)
    # 3 tasks x 2 samples = 6 episodes: one call, each distinct question once
    trajs = collect(ScriptedEngine(tok, lambda ctx: "<answer> Paris </answer>"), tok, rag, TASKS,
                    samples_per_prompt=2, cfg=cfg, greedy=True)
    assert index.calls == [(["What is the capital of France?", "What is the capital of Japan?",
                             "Which city is the capital of France?"], 2)]
    cities = ["Paris", "Paris", "Tokyo", "Tokyo", "Paris", "Paris"]
    for tr, city in zip(trajs, cities):
        prompt = tok.decode(tr.token_ids[:tr.prompt_len])
        assert f'Doc 1(Title: "{city}") {city} is the capital' in prompt, prompt
        assert tr.info["searches"] == 1 and tr.info["retrieval_errors"] == 0 and tr.error is None

    # a failed call: every episode of the batch gets a prompt without documents, counted
    failing = FakeIndex(fail=True)
    rag = make_env_factory(EnvConfig(name="search_rag", settings={"index": failing}))
    trajs = collect(ScriptedEngine(tok, lambda ctx: "<answer> Paris </answer>"), tok, rag,
                    TASKS[:2], samples_per_prompt=1, cfg=cfg, greedy=True)
    assert len(failing.calls) == 1
    assert all(tr.info["retrieval_errors"] == 1 and tr.error is None for tr in trajs)
    assert "(retrieval failed: RetrievalError)" in tok.decode(trajs[0].token_ids[:trajs[0].prompt_len])

    # a task the batch cannot take (chat messages) fails alone; the others still get passages
    index = FakeIndex()
    rag = make_env_factory(EnvConfig(name="search_rag", settings={"index": index, "topk": 1}))
    odd = Task([{"role": "user", "content": "capital of France?"}], ["Paris"], id="q:chat")
    trajs = collect(ScriptedEngine(tok, lambda ctx: "<answer> Paris </answer>"), tok, rag,
                    [TASKS[0], odd, TASKS[1]], samples_per_prompt=1, cfg=cfg, greedy=True)
    assert trajs[1].finish_reason == "error" and "needs the question as text" in trajs[1].error
    assert trajs[0].error is None and trajs[2].error is None
    assert "Tokyo is the capital" in tok.decode(trajs[2].token_ids[:trajs[2].prompt_len])


def test_search_through_a_retrieval_server_and_a_dead_one(tiny_tokenizer):
    from rlvr.retrieval.bm25 import BM25Index
    from rlvr.retrieval.server import running_server

    tok = tiny_tokenizer
    index = BM25Index.build(list(DOCS.values()))
    with running_server(index) as base_url:
        url = base_url + "/retrieve"
        trajs = run(tok, search_policy, TASKS, factory(retriever_url=url, topk=1))
        later = factory(retriever_url=url)  # built (and probed) while the server is up
    for tr, city in zip(trajs, ["Paris", "Tokyo", "Paris"]):
        completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
        assert f'<information>Doc 1(Title: "{city}") {city} is the capital' in completion
        assert completion.endswith(f"<answer> {city} </answer>") and tr.info["retrieval_errors"] == 0
    # the server is gone now: the same URL yields an error observation, not a crashed batch
    [tr] = run(tok, search_policy, TASKS[:1], later)
    completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
    assert "<information>Search failed (RetrievalError:" in completion and "refused" in completion
    assert tr.error is None and tr.info["retrieval_errors"] == 1


# -- Search-R1's turn protocol: a turn without an action, EOS-ended or not, is corrected ----------

def test_eos_turn_without_action_gets_the_corrective_message_and_goes_on(tiny_tokenizer):
    tok = tiny_tokenizer
    eos = tok.eos_token

    def policy(context):  # an instruct model ends its turn with EOS, here without any action
        return "<answer> Paris </answer>" if "Let me try again" in context else "Not sure." + eos

    [tr] = run(tok, policy, TASKS[:1], factory(index=FakeIndex()))
    # the default is Search-R1's loop: the invalid turn is answered and the episode continues
    assert tr.finish_reason == "done" and tr.reward == 1.0
    completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
    assert completion == "Not sure." + eos + INVALID_ACTION_MESSAGE + "<answer> Paris </answer>"
    t0, t1 = tr.turns
    assert t0.stop_reason == "eos" and t1.stop_reason == "stop"
    # the EOS token was sampled and stays trained; the message is observation, never trained
    assert tr.token_ids[t0.action_end - 1] == tok.eos_token_id and tr.loss_mask[t0.action_end - 1] == 1
    assert tr.logprobs[t0.action_end - 1] == -1.0
    assert set(tr.loss_mask[t0.action_end:t0.observation_end]) == {0}
    assert tok.decode(tr.token_ids[t0.action_end:t0.observation_end]) == INVALID_ACTION_MESSAGE
    assert tr.info["actions"] == 2 and tr.info["invalid_actions"] == 1
    assert tr.tool_calls[0].valid is False and tr.tool_calls[0].error == "no <search> or <answer>"
    # 2 turns, 1 valid: the ratio is 1/2
    assert search_metrics([tr])["env/valid_action_ratio"] == 0.5


def test_eos_turns_run_until_the_turn_budget(tiny_tokenizer):
    tok = tiny_tokenizer
    cfg = RolloutConfig(max_turns=3, max_new_tokens=64, max_total_tokens=1024, max_obs_tokens=256)
    [tr] = run(tok, lambda ctx: "Hmm." + tok.eos_token, TASKS[:1], factory(index=FakeIndex()), cfg)
    assert tr.finish_reason == "max_turns" and tr.truncated and tr.reward == 0.0
    assert len(tr.turns) == 3 and tr.info["invalid_actions"] == 3
    completion = tok.decode(tr.completion_ids, skip_special_tokens=False)
    assert completion.count(INVALID_ACTION_MESSAGE) == 3
    assert search_metrics([tr])["env/valid_action_ratio"] == 0.0


def test_end_at_eos_keeps_the_old_behaviour_and_counts_the_turn(tiny_tokenizer):
    tok = tiny_tokenizer
    [tr] = run(tok, lambda ctx: "Not sure." + tok.eos_token, TASKS[:1],
               factory(index=FakeIndex(), end_at_eos=True))
    assert tr.finish_reason == "eos" and len(tr.turns) == 1
    assert INVALID_ACTION_MESSAGE not in tok.decode(tr.completion_ids, skip_special_tokens=False)
    assert tr.info["actions"] == 0  # the environment never saw the turn...
    # ...but it was a turn with neither a search nor an answer: 0 valid of 1, not "1.0 of nothing"
    [good] = run(tok, search_policy, TASKS[:1], factory(index=FakeIndex(), end_at_eos=True))
    # (0 + 2 valid) / (1 + 2 turns)
    assert search_metrics([tr, good])["env/valid_action_ratio"] == pytest.approx(2 / 3)
    # a turn cut by the token budget is no action either
    cfg = RolloutConfig(max_turns=4, max_new_tokens=4, max_total_tokens=1024)
    [cut] = run(tok, lambda ctx: "a long ramble that never ends", TASKS[:1],
                factory(index=FakeIndex()), cfg)
    assert cut.finish_reason == "max_new_tokens"
    assert search_metrics([cut])["env/valid_action_ratio"] == 0.0


def test_retriever_url_is_probed_when_the_factory_is_built():
    from rlvr.retrieval.bm25 import BM25Index
    from rlvr.retrieval.server import running_server

    with running_server(BM25Index.build(list(DOCS.values()))) as base_url:
        factory(retriever_url=base_url + "/retrieve")  # answers: no error
        dead = base_url + "/retrieve"
    with pytest.raises(ValueError, match=r"setting retriever_url = 'http://127\.0\.0\.1:\d+/retrieve' "
                                         r"did not answer a probe search"):
        factory(retriever_url=dead)
    with pytest.raises(ValueError, match="retriever_url.*did not answer"):
        make_env_factory(EnvConfig(name="search_rag", settings={"retriever_url": dead}))
