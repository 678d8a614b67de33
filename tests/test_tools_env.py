"""The tools environment: schemas into the template, token-exact tool turns, errors as messages."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rlvr.core.config import RolloutConfig
from rlvr.environments.chat_delta import ChatRenderer, TemplateError, render_tool_message
from rlvr.environments.tools import ToolsEnv, make_tool, schema_from_callable
from rlvr.rollout.episodes import collect
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task

FIXTURES = Path(__file__).parent / "fixtures" / "chat_templates"
LLAMA_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
                  "<|eom_id|>", "<|python_tag|>"]


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first number
        b: the second number
    """
    return a + b


def boom(x: str) -> str:
    """Always fails."""
    raise RuntimeError("disk on fire")


def slow() -> str:
    """Sleeps too long."""
    time.sleep(5)
    return "late"


def _tokenizer(template: str):
    from rlvr.core.models import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    if template == "tiny":
        return tok
    if template == "llama3_2":
        tok.add_special_tokens({"additional_special_tokens": LLAMA_SPECIALS})
        tok.eos_token, tok.bos_token = "<|eot_id|>", "<|begin_of_text|>"
    tok.chat_template = (FIXTURES / f"{template}.jinja").read_text()
    return tok


@pytest.fixture(scope="module", params=["qwen2_5", "llama3_2", "smollm2", "tiny"])
def tok(request):
    return _tokenizer(request.param)


def _eot(tok) -> str:
    return tok.eos_token


def _call_text(tok, calls: list[dict]) -> str:
    if "<|python_tag|>" in (tok.chat_template or ""):  # Llama 3.x: bare JSON
        return "; ".join(json.dumps({"name": c["name"], "parameters": c["arguments"]}) for c in calls)
    return "".join(f"<tool_call>{json.dumps(c)}</tool_call>" for c in calls)


def _run(tok, env_factory, policy, *, prompt="What is 2+3?", info=None, max_turns=4):
    eng = ScriptedEngine(tok, policy)
    cfg = RolloutConfig(samples_per_prompt=1, max_turns=max_turns, max_new_tokens=400,
                        max_total_tokens=4000, max_obs_tokens=1000)
    task = Task(prompt, "5", info or {}, id="t:0")
    return collect(eng, tok, env_factory, [task], samples_per_prompt=1, cfg=cfg)[0], eng


def test_two_tool_rounds_are_the_template_rendering_token_for_token(tok):
    # turn 1 calls add twice (several calls per turn), turn 2 calls it once, turn 3 answers
    replies = [_call_text(tok, [{"name": "add", "arguments": {"a": 2, "b": 3}},
                                {"name": "add", "arguments": {"a": 1, "b": 1}}]),
               _call_text(tok, [{"name": "add", "arguments": {"a": 5, "b": 0}}]),
               "The sum is 5."]
    seen = []

    def policy(ctx):
        seen.append(ctx)
        return replies[len(seen) - 1] + _eot(tok)

    traj, _ = _run(tok, lambda: ToolsEnv(tools=[add]), policy)
    assert traj.error is None and traj.finish_reason == "done" and len(traj.turns) == 3
    # the conversation as messages, rendered in one go by the template, must equal the trajectory
    # (but for what the template adds after the last end-of-turn token)
    r = ChatRenderer(tok, [schema_from_callable(add)])
    msgs = [{"role": "user", "content": "What is 2+3?"},
            {"role": "assistant", "content": replies[0]},
            render_tool_message("add", "5", "c1"), render_tool_message("add", "2", "c2"),
            {"role": "assistant", "content": replies[1]},
            render_tool_message("add", "5", "c3"),
            {"role": "assistant", "content": replies[2]}]
    full = r.render_ids(msgs, add_generation_prompt=False)
    assert traj.token_ids == full[: len(traj.token_ids)]
    assert len(full) - len(traj.token_ids) <= 1  # ChatML's trailing new line, or nothing
    # loss_mask is 1 exactly on the three sampled turns
    sampled = [tok.encode(t + _eot(tok), add_special_tokens=False) for t in replies]
    assert traj.num_sampled == sum(map(len, sampled))
    for turn, ids in zip(traj.turns, sampled):
        assert traj.token_ids[turn.action_start:turn.action_end] == ids
        assert set(traj.loss_mask[turn.action_start:turn.action_end]) == {1}
        assert set(traj.loss_mask[turn.action_end:turn.observation_end]) <= {0}
    assert traj.info["tool_calls"] == 3.0 and traj.info["tool_errors"] == 0.0


def test_the_template_gets_the_tool_schemas(tok):
    traj, _ = _run(tok, lambda: ToolsEnv(tools=[add]), lambda ctx: "no tools" + _eot(tok))
    prompt = tok.decode(traj.token_ids[: traj.prompt_len], skip_special_tokens=False)
    assert '"name": "add"' in prompt and "the first number" in prompt
    assert traj.finish_reason == "done" and traj.info["tool_calls"] == 0.0


@pytest.mark.parametrize("template", ["qwen2_5"])
def test_errors_become_tool_messages_never_crashes(template):
    tok = _tokenizer(template)
    first = ('<tool_call>{"name": "nope", "arguments": {}}</tool_call>'
             '<tool_call>{"name": "add", "arguments": {"a": 1}}</tool_call>'
             '<tool_call>{"name": "boom", "arguments": {"x": "y"}}</tool_call>'
             '<tool_call>{"name": "add", "arguments": {"a": 1, "b": </tool_call>'
             '<tool_call>{"name": "slow", "arguments": {}}</tool_call>')
    turns = iter([first, "giving up"])
    t0 = time.monotonic()
    traj, _ = _run(tok, lambda: ToolsEnv(tools=[add, boom, slow], tool_timeout_s=0.2),
                   lambda ctx: next(turns) + "<|im_end|>")
    assert time.monotonic() - t0 < 4  # the slow tool did not hold the episode
    assert traj.error is None and traj.finish_reason == "done"
    obs = tok.decode(traj.token_ids[traj.turns[0].action_end:traj.turns[0].observation_end])
    assert "unknown tool 'nope'" in obs and "add, boom, slow" in obs
    assert "missing required argument(s): b" in obs
    assert "boom raised RuntimeError: disk on fire" in obs
    assert "not valid JSON" in obs
    assert "slow timed out after 0.2 s" in obs
    assert traj.info["tool_errors"] == 5.0
    # every call of the turn is recorded, in order (not only the first)
    assert [c.name for c in traj.tool_calls] == ["nope", "add", "boom", "", "slow"]  # "" unparsed
    assert all(c.error for c in traj.tool_calls)


def test_declared_only_tools_end_the_episode_with_the_calls():
    tok = _tokenizer("qwen2_5")
    fn = {"name": "math.factorial", "description": "n!", "parameters": {
        "type": "dict", "properties": {"number": {"type": "integer"}}, "required": ["number"]}}
    call = '<tool_call>{"name": "math.factorial", "arguments": {"number": 5}}</tool_call>'
    traj, eng = _run(tok, lambda: ToolsEnv(), lambda ctx: call + "<|im_end|>",
                     info={"functions": [fn]})
    assert traj.finish_reason == "done" and len(traj.turns) == 1 and len(eng.calls) == 1
    prompt = tok.decode(traj.token_ids[: traj.prompt_len])
    assert '"type": "object"' in prompt and '"math.factorial"' in prompt  # BFCL dict → object


BROKEN = ("{% for m in messages %}{% if m['role'] == 'assistant' and not loop.last %}"
          "<|im_start|>assistant\nOLD<|im_end|>\n{% else %}<|im_start|>{{ m['role'] }}\n"
          "{{ m['content'] }}<|im_end|>\n{% endif %}{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_a_template_that_rewrites_earlier_turns_is_refused_naming_it_and_the_token():
    tok = _tokenizer("tiny")
    tok.chat_template = BROKEN  # earlier assistant turns render differently once a tool follows
    with pytest.raises(TemplateError) as e:
        _run(tok, lambda: ToolsEnv(tools=[add]), lambda ctx: "x<|im_end|>")
    msg = str(e.value)
    assert "chat template of" in msg and "sha1" in msg and "not prefix-preserving" in msg
    assert "First differing token at position" in msg


def test_a_generation_prompt_that_is_not_the_assistant_turn_is_refused():
    tok = _tokenizer("tiny")
    tok.chat_template = BROKEN.replace("<|im_start|>assistant\n{% endif %}",
                                       "<|im_start|>model\n{% endif %}")
    with pytest.raises(TemplateError, match="generation prompt"):
        _run(tok, lambda: ToolsEnv(tools=[add]), lambda ctx: "x<|im_end|>")


def test_schemas_from_callables_and_import_paths():
    s = schema_from_callable(add)["function"]
    assert s["name"] == "add" and s["description"] == "Add two integers."
    assert s["parameters"] == {"type": "object", "required": ["a", "b"], "properties": {
        "a": {"type": "integer", "description": "the first number"},
        "b": {"type": "integer", "description": "the second number"}}}
    (t,) = make_tool("tests.test_tools_env:add")
    assert t.fn(a=2, b=3) == 5 and t.schema == schema_from_callable(add)
    with pytest.raises(ValueError, match="cannot import"):
        make_tool("tests.test_tools_env:nothing_here")
    with pytest.raises(ValueError, match="needs a 'name'"):
        make_tool({"description": "no name"})


def test_unknown_parser_setting_fails_listing_the_known_ones():
    with pytest.raises(KeyError, match="hermes"):
        ToolsEnv(parser="xml")


def test_rlvr_train_grpo_tools_runs_two_steps(tmp_path):
    """The bundled grpo_tools config through ``rlvr train`` on the tiny model: BFCL-style tasks,
    the tools environment and the bfcl reward, two GRPO steps."""
    import os
    import subprocess
    import sys

    out = tmp_path / "run"
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    res = subprocess.run([sys.executable, "-m", "rlvr", "train", "grpo_tools", "--run.steps", "2",
                          "--output-dir", str(out), "--run.progress", "false"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    assert all("reward/bfcl" in r and "env/tool_calls_per_episode" in r for r in rows)
    assert all(r["rollout/errors"] == 0.0 for r in rows)
