"""A scripted, imperfect expert that writes demonstrations for the synthetic world's questions.

The demonstrations are rollouts: the episode loop (:func:`rlvr.rollout.episodes.collect`) runs
the real search environment with the expert in the engine's place (a
:class:`~rlvr.testing.ScriptedEngine`), so the expert's turns are appended as sampled
(``loss_mask = 1``) and the ``<information>`` blocks the real index returns as observations
(``loss_mask = 0``), exactly as in RL. SFT on these trajectories trains only on the policy's parts,
the same rule RL follows. (The expert's "logprobs" are the scripted engine's -1.0; SFT reads none.)

The expert has three habits, mixed by :class:`ExpertConfig`:

- ``good``: searches the subject's full name (and, for a two-hop question, then the place the first
  passage names) and answers with what the passages say;
- ``guess``: answers at once, without searching, with a random entity of the right kind;
- ``bad``: searches an under-specified query (only the first or last name), then answers with what
  the top passage says about whoever it is about — usually someone else.

With good demonstrations in the minority, a policy cloned from them does not yet know when the tool
pays; reinforcement learning with the exact-match reward has to find that out. (The default job
first trains on good demonstrations only, ``p_good = 1``, so that the policy has the skill to use
the tool: copying a name into a query and an answer out of a passage is slow for a tiny model to
learn from a minority of the data.)
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable

from rlvr.core.config import RolloutConfig
from rlvr.core.environment import Environment
from rlvr.core.types import Task, Trajectory
from rlvr.jobs.search_world.world import World
from rlvr.rollout.episodes import collect
from rlvr.testing import ScriptedEngine

BEHAVIOURS = ("good", "guess", "bad")
_TOP_TITLE = re.compile(r'Doc 1\(Title: "?(.*?)"?\)')
_MAX_ACTION_TOKENS = 256  # an expert turn is a short tag; the bound only guards the loop


@dataclass
class ExpertConfig:
    p_good: float = 0.3
    """Share of demonstrations that search well and answer from the passages."""
    p_guess: float = 0.5
    """Share that answer at once with a random entity of the right kind (the rest search badly)."""
    demos_per_question: int = 2
    """Demonstrations per training question (each draws its habit independently)."""
    seed: int = 0
    """Seed of the habit draws, the guesses and the bad queries."""

    def __post_init__(self) -> None:
        if not (0 <= self.p_good and 0 <= self.p_guess and self.p_good + self.p_guess <= 1):
            raise ValueError(f"expert: p_good ({self.p_good}) and p_guess ({self.p_guess}) must be "
                             f">= 0 and sum to at most 1")
        if self.demos_per_question < 1:
            raise ValueError(f"expert: demos_per_question must be >= 1, got {self.demos_per_question}")


def _answer_from_top(world: World, observation: str, qtype: str, rng: random.Random) -> str:
    """What the top passage of an observation says for this question type (a guess if nothing)."""
    m = _TOP_TITLE.search(observation)
    title = m.group(1) if m else ""
    person = next((p for p in world.people if p.name == title), None)
    if person is not None:
        if qtype == "birthplace":
            return person.birthplace
        if qtype == "employer":
            return person.employer
        return world.cities[person.birthplace]
    if qtype == "birth_country" and title in world.cities:
        return world.cities[title]
    return rng.choice(world.answer_pool(qtype))


def plan_first_turn(world: World, task: Task, behaviour: str, rng: random.Random) -> str:
    """The expert's first turn for ``behaviour`` (later turns depend on what comes back)."""
    meta = task.info.get("metadata") or {}
    subject, qtype = meta["subject"], meta["type"]
    if behaviour == "good":
        return f"<search> {subject} </search>"
    if behaviour == "guess":
        return f"<answer> {rng.choice(world.answer_pool(qtype))} </answer>"
    if behaviour == "bad":
        return f"<search> {rng.choice(subject.split())} </search>"
    raise ValueError(f"expert behaviour {behaviour!r} unknown; known: {', '.join(BEHAVIOURS)}")


class _Script:
    """The expert's side of one demonstration, as a :class:`~rlvr.testing.ScriptedEngine` policy:
    decoded context so far → this turn's text. Later turns read the passages of the newest
    ``<information>`` block in the context, as the policy would."""

    def __init__(self, world: World, task: Task, behaviour: str, rng: random.Random) -> None:
        meta = task.info.get("metadata") or {}
        if "subject" not in meta or "type" not in meta:
            raise ValueError(f"task {task.id}: the expert needs info.metadata with 'subject' and "
                             f"'type' (a synthetic-world question)")
        self.world, self.task, self.behaviour, self.rng = world, task, behaviour, rng
        self.subject, self.qtype, self.hops = meta["subject"], meta["type"], int(meta.get("hops", 1))
        self.turns = 0

    def __call__(self, context: str) -> str:
        self.turns += 1
        if self.turns == 1:
            return plan_first_turn(self.world, self.task, self.behaviour, self.rng)
        observation = context[context.rfind("<information>"):]
        # A good expert follows the chain; a bad one takes the top passage at face value.
        if self.behaviour == "good" and self.hops == 2 and self.turns == 2:
            return f"<search> {self.world.person(self.subject).birthplace} </search>"
        if self.behaviour == "good":
            answer = self.task.answer[0] if isinstance(self.task.answer, list) else self.task.answer
            return f"<answer> {answer} </answer>"
        return f"<answer> {_answer_from_top(self.world, observation, self.qtype, self.rng)} </answer>"


def demonstrate(world: World, task: Task, env: Environment, tokenizer, behaviour: str,
                rng: random.Random, *, max_obs_tokens: int = 128, max_turns: int = 4) -> Trajectory:
    """One token-exact demonstration of ``behaviour`` on ``task`` through ``env``: the episode loop
    itself (:func:`rlvr.rollout.episodes.collect`) with the expert as its engine."""
    script = _Script(world, task, behaviour, rng)
    limits = RolloutConfig(max_new_tokens=_MAX_ACTION_TOKENS, max_total_tokens=1_000_000,
                           max_turns=max_turns, max_obs_tokens=max_obs_tokens, score_timeout_s=0.0)
    [traj] = collect(ScriptedEngine(tokenizer, script), tokenizer, lambda: env, [task],
                     samples_per_prompt=1, cfg=limits, greedy=True)
    if traj.error:
        raise RuntimeError(f"task {task.id}: the expert's episode failed: {traj.error}")
    traj.info["expert"] = behaviour
    return traj


def expert_trajectories(world: World, tasks: list[Task], env_factory: Callable[[], Environment],
                        tokenizer, cfg: ExpertConfig | None = None, *, max_obs_tokens: int = 128,
                        max_turns: int = 4) -> list[Trajectory]:
    """``cfg.demos_per_question`` demonstrations per task, habits drawn from ``cfg`` (seeded)."""
    cfg = cfg or ExpertConfig()
    rng = random.Random(cfg.seed)
    weights = (cfg.p_good, cfg.p_guess, 1.0 - cfg.p_good - cfg.p_guess)
    out = []
    for task in tasks:
        for _ in range(cfg.demos_per_question):
            behaviour = rng.choices(BEHAVIOURS, weights)[0]
            out.append(demonstrate(world, task, env_factory(), tokenizer, behaviour, rng,
                                   max_obs_tokens=max_obs_tokens, max_turns=max_turns))
    return out
