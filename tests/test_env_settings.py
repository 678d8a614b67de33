"""Declared, type-checked environment settings; the preflight hook; ``end_at_eos`` in the loop."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import pytest

import rlvr
from rlvr.core.config import EnvConfig, RolloutConfig
from rlvr.core.environment import Environment, StepResult, conforms
from rlvr.rollout.episodes import collect, make_env_factory
from rlvr.testing import ScriptedEngine
from rlvr.core.types import Task


@rlvr.environment("test_settings_probe")
class Probe(Environment):
    """Declares one setting of each kind; counts preflight calls."""

    stop_strings = ["</go>"]
    preflights: ClassVar[list[dict]] = []  # protocol state, not a setting
    rounds: int = 2
    scale: float = 1.0
    mode: Literal["fast", "slow"] = "fast"
    names: list[str] = []
    table: dict[str, float] = {}
    target: str | None = None
    anything: Any = None

    @classmethod
    def preflight(cls, settings):
        cls.preflights.append(dict(settings))
        if settings.get("target") == "unreachable":
            raise ValueError("environment Probe: setting target = 'unreachable' does not answer")


def _factory(**settings):
    return make_env_factory(EnvConfig(name="test_settings_probe", settings=settings))


def test_declared_settings_are_the_annotated_attributes():
    assert Probe.setting_types() == {
        "anything": Any, "end_at_eos": bool, "mode": Literal["fast", "slow"], "names": list[str],
        "rounds": int, "scale": float, "system_prompt": str | None, "table": dict[str, float],
        "target": str | None, "verifiers": dict[str, float]}
    # ClassVar attributes (stop_strings, preflights) are protocol, never settings
    assert "stop_strings" not in Probe.setting_types() and "preflights" not in Probe.setting_types()


def test_unknown_setting_is_named_with_the_valid_ones():
    with pytest.raises(ValueError) as e:
        _factory(round=3)
    msg = str(e.value)
    assert msg.startswith("environment 'test_settings_probe' (env.settings): unknown setting 'round'")
    assert "valid settings: anything (Any), end_at_eos (bool), mode (Literal['fast', 'slow'])" in msg
    assert "rounds (int), scale (float), system_prompt (str | None)" in msg
    with pytest.raises(ValueError, match="unknown setting 'stop_strings'"):
        Probe(stop_strings=["</x>"])  # the constructor checks too


@pytest.mark.parametrize("key, value, expected", [
    ("system_prompt", 1, "str | None"),   # the example of issue 16: a number is not a prompt
    ("rounds", "2", "int"),
    ("rounds", True, "int"),              # YAML yes/true is not a count
    ("rounds", 2.5, "int"),
    ("scale", "1.0", "float"),
    ("mode", "medium", "Literal['fast', 'slow']"),
    ("names", "a,b", "list[str]"),
    ("names", ["a", 2], "list[str]"),
    ("table", {"a": "x"}, "dict[str, float]"),
    ("verifiers", ["qa_em"], "dict[str, float]"),
    ("end_at_eos", "no", "bool"),
])
def test_wrong_type_names_setting_type_and_value(key, value, expected):
    with pytest.raises(ValueError) as e:
        _factory(**{key: value})
    assert str(e.value) == (f"environment 'test_settings_probe' (env.settings): setting {key!r} "
                            f"must be {expected}, got {type(value).__name__} {value!r}")


def test_good_settings_pass_and_ints_become_floats():
    env = _factory(rounds=3, scale=2, mode="slow", names=["a"], table={"x": 1},
                   target=None, anything=object(), system_prompt="Be brief.")()
    assert (env.rounds, env.scale, env.mode, env.names) == (3, 2.0, "slow", ["a"])
    assert type(env.scale) is float and env.system_prompt == "Be brief."
    assert env.reset(Task("hi", "x", id="t")) == [{"role": "system", "content": "Be brief."},
                                                  {"role": "user", "content": "hi"}]


def test_preflight_runs_once_per_factory_with_the_checked_settings():
    Probe.preflights.clear()
    factory = _factory(scale=3, target="ok")
    [factory() for _ in range(4)]  # episodes do not preflight again
    assert Probe.preflights == [{"scale": 3.0, "target": "ok"}]
    with pytest.raises(ValueError, match="setting target = 'unreachable' does not answer"):
        _factory(target="unreachable")
    Probe.preflights.clear()
    with pytest.raises(ValueError, match="unknown setting"):
        _factory(targte="ok")
    assert Probe.preflights == []  # types are checked before anything is probed


def test_every_builtin_environment_declares_typed_settings():
    from rlvr.core.registry import ENVIRONMENTS

    for name in ("calculator", "math", "code", "code_multiturn", "search", "search_direct",
                 "search_rag"):
        types = ENVIRONMENTS.get(name).setting_types()
        assert types["system_prompt"] == str | None and types["verifiers"] == dict[str, float], name
    assert ENVIRONMENTS.get("search").setting_types()["topk"] is int
    assert ENVIRONMENTS.get("code_multiturn").setting_types()["max_attempts"] is int
    with pytest.raises(ValueError, match=r"setting 'system_prompt' must be str \| None, got int 1"):
        make_env_factory(EnvConfig(name="calculator", settings={"system_prompt": 1}))


def test_conforms_edge_cases():
    assert conforms(3, float) and not conforms(True, float) and conforms(None, int | None)
    assert conforms((1, "a"), tuple[int, str]) and not conforms((1, 2), tuple[int, str])
    assert conforms([1, 2], list) and conforms({"a": [1]}, dict[str, list[int]])


# -- end_at_eos: whether an EOS-ended turn reaches step ----------------------------------------

class Patient(Environment):
    """Continues after any turn until it reads "done"; records what step saw."""

    def __init__(self, **settings):
        super().__init__(**settings)
        self.seen: list[str] = []

    def step(self, action):
        self.seen.append(action)
        return StepResult(observation=" [again] ", done="done" in action)


def test_end_at_eos_false_passes_the_eos_turn_to_step(tiny_tokenizer):
    tok = tiny_tokenizer
    eos = tok.eos_token
    envs: list[Patient] = []

    def factory():
        envs.append(Patient(end_at_eos=False))
        return envs[-1]

    policy = lambda ctx: ("done" if "[again]" in ctx else "not yet") + eos  # noqa: E731
    cfg = RolloutConfig(max_turns=4, max_new_tokens=16, max_total_tokens=256)
    [tr] = collect(ScriptedEngine(tok, policy), tok, factory, [Task("go", "x", id="t")],
                   samples_per_prompt=1, cfg=cfg)
    # step saw both turns, without the EOS token; the second ended the episode
    assert envs[0].seen == ["not yet", "done"] and tr.finish_reason == "done"
    assert [t.stop_reason for t in tr.turns] == ["eos", "eos"]
    # token-exact: both EOS tokens stay, sampled; only the observation is masked out
    assert tok.decode(tr.completion_ids, skip_special_tokens=False) == f"not yet{eos} [again] done{eos}"
    assert len(tr.token_ids) == len(tr.loss_mask) == len(tr.logprobs)
    t0 = tr.turns[0]
    assert tr.token_ids[t0.action_end - 1] == tok.eos_token_id
    assert set(tr.loss_mask[t0.action_start:t0.action_end]) == {1}
    assert set(tr.loss_mask[t0.action_end:t0.observation_end]) == {0}
    assert sum(tr.loss_mask) == len(tok.encode(f"not yet{eos}done{eos}", add_special_tokens=False))

    # the default (end_at_eos true): EOS ends the episode and step never runs
    envs.clear()
    default = lambda: envs.append(Patient()) or envs[-1]  # noqa: E731
    [tr] = collect(ScriptedEngine(tok, policy), tok, default, [Task("go", "x", id="t")],
                   samples_per_prompt=1, cfg=cfg)
    assert envs[0].seen == [] and tr.finish_reason == "eos" and len(tr.turns) == 1
