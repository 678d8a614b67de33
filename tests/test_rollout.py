"""The episode loop: token-exact masks, budgets, group ids and failure isolation."""

import pytest

from rlvr.core.config import RolloutConfig
from rlvr.core.environment import Environment, StepResult
from rlvr.rollout.episodes import collect, encode_observation, render_prompt
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task

from rlvr.environments.calculator import CalculatorEnv


def calc_policy(context: str) -> str:
    # first turn: call the tool; after a result: answer with it
    if "<result>" not in context:
        return "I will compute. <calc>2+3</calc> trailing text never reached"
    return "<answer>5</answer>"


def run(tokenizer, policy, tasks, cfg=None, env=CalculatorEnv, g=1):
    cfg = cfg or RolloutConfig(max_turns=4, max_new_tokens=64, max_total_tokens=512)
    return collect(ScriptedEngine(tokenizer, policy), tokenizer, env, tasks,
                   samples_per_prompt=g, cfg=cfg)


def test_masks_are_token_exact(tiny_tokenizer):
    tok = tiny_tokenizer
    task = Task("What is 2+3?", "5", id="t:0")
    [tr] = run(tok, calc_policy, [task])
    assert tr.finish_reason == "done" and not tr.truncated and tr.error is None
    assert len(tr.token_ids) == len(tr.loss_mask) == len(tr.logprobs)
    prompt_text = tok.decode(tr.token_ids[: tr.prompt_len], skip_special_tokens=False)
    expected = prompt_text + "I will compute. <calc>2+3</calc><result>5</result><answer>5</answer>"
    assert tok.decode(tr.token_ids, skip_special_tokens=False) == expected
    sampled = tok.decode([t for t, m in zip(tr.token_ids, tr.loss_mask) if m], skip_special_tokens=False)
    assert sampled == "I will compute. <calc>2+3</calc><answer>5</answer>"
    assert "<result>" not in sampled
    # every sampled token carries the engine's logprob; nothing else does
    assert all((lp == -1.0) == bool(m) for lp, m in zip(tr.logprobs, tr.loss_mask))
    assert len(tr.turns) == 2 and tr.turns[0].observation_end > tr.turns[0].action_end
    assert tr.tool_calls[0].name == "calc" and tr.tool_calls[0].query == "2+3"


def test_prompt_is_rendered_once_and_extended(tiny_tokenizer):
    tok = tiny_tokenizer
    engine = ScriptedEngine(tok, calc_policy)
    collect(engine, tok, CalculatorEnv, [Task("What is 2+3?", "5", id="t:0")], samples_per_prompt=1,
            cfg=RolloutConfig())
    first, second = engine.calls[0][0], engine.calls[1][0]
    assert second[: len(first)] == first  # turn 2 continues turn 1's tokens, no re-rendering


def test_max_turns_truncates(tiny_tokenizer):
    always_call = lambda ctx: "<calc>1+1</calc>"
    cfg = RolloutConfig(max_turns=3, max_new_tokens=16, max_total_tokens=512)
    [tr] = run(tiny_tokenizer, always_call, [Task("What is 1+1?", "2", id="t:0")], cfg)
    assert tr.finish_reason == "max_turns" and tr.truncated and len(tr.turns) == 3
    assert tr.reward == 0.0


@pytest.mark.parametrize("budget", [90, 100, 131])
def test_max_total_tokens_is_never_exceeded(tiny_tokenizer, budget):
    chatty = lambda ctx: "blah " * 40 + "<calc>1+1</calc>"
    cfg = RolloutConfig(max_turns=50, max_new_tokens=32, max_total_tokens=budget)
    trajs = run(tiny_tokenizer, chatty, [Task("What is 1+1?", "2", id="t:0")], cfg, g=2)
    for tr in trajs:
        assert len(tr) <= budget
        assert tr.truncated and tr.finish_reason in ("max_total_tokens", "max_new_tokens")


def test_a_long_episode_does_not_shorten_its_batch_mates(tiny_tokenizer):
    """Budgets are per episode: a task whose prompt nearly fills max_total_tokens is truncated,
    while a short task in the same batch finishes exactly as it does alone."""
    tok = tiny_tokenizer
    short = Task("What is 2+3?", "5", id="t:0")
    long = Task("What is 2+3? " + "Think hard. " * 30, "5", id="t:1")
    probe = RolloutConfig(max_turns=1, max_new_tokens=1, max_total_tokens=1024)
    long_prompt = run(tok, lambda c: "x", [long], probe)[0].prompt_len
    [alone] = run(tok, calc_policy, [short])
    budget = long_prompt + 3
    assert len(alone) < budget  # the short episode fits comfortably in its own budget
    cfg = RolloutConfig(max_turns=4, max_new_tokens=64, max_total_tokens=budget)
    together = run(tok, calc_policy, [short, long], cfg)
    assert together[0].finish_reason == "done" and together[0].reward == 1.0
    assert together[0].token_ids == alone.token_ids
    assert together[1].truncated and len(together[1]) <= budget


def test_group_ids(tiny_tokenizer):
    tasks = [Task("What is 1+1?", "2", id="nq:0"), Task("What is 1+1?", "2", id="hotpotqa:0"),
             Task("What is 2+2?", "4", id="nq:1")]
    trajs = run(tiny_tokenizer, calc_policy, tasks, g=3)
    groups = [tr.group_id for tr in trajs]
    assert len(set(groups)) == 3  # one id per prompt instance, even for equal indices
    for i in range(3):
        assert len(set(groups[3 * i: 3 * i + 3])) == 1  # the G samples of one task share it
        assert {tr.task_id for tr in trajs[3 * i: 3 * i + 3]} == {tasks[i].id}
    again = run(tiny_tokenizer, calc_policy, tasks[:1], g=1)
    assert again[0].group_id not in groups  # the same task sampled again is a new instance


class Flaky(Environment):
    stop_strings = ["</calc>", "</answer>"]
    resets: list[str] = []  # task ids, one per reset call

    def reset(self, task):
        Flaky.resets.append(task.id)
        if task.info.get("bad_reset"):
            raise RuntimeError("corpus missing")
        return super().reset(task)

    def step(self, action):
        if self.task.info.get("bad_step"):
            raise RuntimeError("tool crashed")
        return StepResult(done=True, reward=1.0)


def test_failing_episode_is_recorded_not_fatal(tiny_tokenizer):
    tasks = [Task("ok", "x", id="t:0"), Task("bad", "x", {"bad_step": True}, id="t:1"),
             Task("bad", "x", {"bad_reset": True}, id="t:2")]
    Flaky.resets.clear()
    trajs = run(tiny_tokenizer, calc_policy, tasks, env=Flaky)
    # the default reset_batch resets each episode once, the failing one included
    assert Flaky.resets == ["t:0", "t:1", "t:2"]
    assert trajs[0].finish_reason == "done" and trajs[0].reward == 1.0
    assert trajs[1].finish_reason == "error" and "tool crashed" in trajs[1].error
    assert trajs[2].finish_reason == "error" and "corpus missing" in trajs[2].error
    assert trajs[1].reward == trajs[2].reward == 0.0 and trajs[1].task_id == "t:1"


def test_chat_prompt_without_template_names_the_task(tiny_tokenizer):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    with pytest.raises(ValueError, match=r"task q:7.*no chat template"):
        render_prompt(tok, [{"role": "user", "content": "hi"}], "q:7")


def test_empty_prompt_is_rejected():
    with pytest.raises(ValueError, match="t:3.*empty"):
        Task("   ", "x", id="t:3")


def test_inexpressible_stop_string_is_rejected():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    wl = Tokenizer(models.WordLevel({"[UNK]": 0, "hi": 1, "<|e|>": 2}, unk_token="[UNK]"))
    wl.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=wl, unk_token="[UNK]", eos_token="<|e|>",
                                  pad_token="<|e|>")

    class Env(Environment):
        stop_strings = ["</search>"]

    with pytest.raises(ValueError, match=r"Env: stop string '</search>' cannot be expressed"):
        collect(ScriptedEngine(tok, lambda c: "hi"), tok, Env, [Task("hi", "x", id="t:0")],
                samples_per_prompt=1, cfg=RolloutConfig())


def test_observation_truncation_keeps_closing_tag(tiny_tokenizer):
    tok = tiny_tokenizer
    text = "<information>" + "word " * 200 + "</information>\n\n"
    ids, cut = encode_observation(tok, text, 40)
    assert cut and len(ids) == 40
    assert tok.decode(ids).endswith("</information>\n\n")
    short, cut = encode_observation(tok, "<result>5</result>", 40)
    assert not cut and tok.decode(short) == "<result>5</result>"


def test_a_group_renders_its_shared_prompt_once(tiny_tokenizer, monkeypatch):
    # the chat template runs once per distinct prompt, not once per sample; an environment whose
    # samples reset to different prompts still gets each rendered
    import rlvr.rollout.episodes as episodes

    rendered = []
    real = episodes.render_prompt
    monkeypatch.setattr(episodes, "render_prompt",
                        lambda tok, prompt, task_id="": (rendered.append(task_id), real(tok, prompt, task_id))[1])

    class Numbered(CalculatorEnv):
        count = 0

        def reset(self, task):
            Numbered.count += 1
            return f"{task.prompt} (sample {Numbered.count})" if task.id == "t:1" else task.prompt

    tasks = [Task("What is 2+3?", "5", id="t:0"), Task("What is 1+1?", "2", id="t:1")]
    trajs = run(tiny_tokenizer, calc_policy, tasks, env=Numbered, g=4)
    assert rendered == ["t:0"] + ["t:1"] * 4
    assert len({tuple(t.token_ids[:t.prompt_len]) for t in trajs[:4]}) == 1
    assert len({tuple(t.token_ids[:t.prompt_len]) for t in trajs[4:]}) == 4
    assert all(t.error is None for t in trajs) and all(t.reward == 1.0 for t in trajs[:4])  # 2+3 = 5
