"""A scripted, imperfect expert that writes demonstrations for the synthetic world's questions.

The demonstrations are built exactly as a rollout would build them, through the real search
environment: the prompt from ``env.reset`` rendered by :func:`rlvr.rollout.render_prompt`, each of
the expert's turns appended with :meth:`Trajectory.append_sampled` (``loss_mask = 1``), and the
environment's ``<information>`` block — produced by the real index — appended with
:meth:`Trajectory.append_observation` (``loss_mask = 0``). So SFT on these trajectories trains only
on the policy's parts, the same rule RL follows.

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

from rlvr.environment import Environment
from rlvr.types import Task, Trajectory, Turn
from rlvr.world import World

BEHAVIOURS = ("good", "guess", "bad")
_TOP_TITLE = re.compile(r'Doc 1\(Title: "?(.*?)"?\)')


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


def demonstrate(world: World, task: Task, env: Environment, tokenizer, behaviour: str,
                rng: random.Random, *, max_obs_tokens: int = 128, max_turns: int = 4) -> Trajectory:
    """One token-exact demonstration of ``behaviour`` on ``task`` through ``env``."""
    from rlvr.rollout import encode_observation, render_prompt

    meta = task.info.get("metadata") or {}
    if "subject" not in meta or "type" not in meta:
        raise ValueError(f"task {task.id}: the expert needs info.metadata with 'subject' and 'type' "
                         f"(a synthetic-world question)")
    traj = Trajectory.from_prompt(render_prompt(tokenizer, env.reset(task), task.id),
                                  task_id=task.id)
    qtype, hops = meta["type"], int(meta.get("hops", 1))
    action = plan_first_turn(world, task, behaviour, rng)
    searches_done = 0
    while True:
        start = len(traj)
        ids = tokenizer.encode(action, add_special_tokens=False)
        # The expert's text is the policy's part; its logprobs are unknown (0.0) and unused by SFT.
        traj.append_sampled(ids, [0.0] * len(ids))
        result = env.step(action)
        if result.tool_call is not None:
            traj.tool_calls.append(result.tool_call)
        if result.done:
            traj.turns.append(Turn(start, len(traj), len(traj), "stop"))
            traj.finish_reason = "done"
            break
        action_end = len(traj)
        obs_ids, _ = encode_observation(tokenizer, result.observation, max_obs_tokens)
        traj.append_observation(obs_ids)
        traj.turns.append(Turn(start, action_end, len(traj), "stop"))
        searches_done += 1
        if len(traj.turns) >= max_turns:
            traj.finish_reason, traj.truncated = "max_turns", True
            break
        # The next turn reads the passages: a good expert follows the chain; a bad one takes the
        # top passage at face value.
        if behaviour == "good" and hops == 2 and searches_done == 1:
            city = world.person(meta["subject"]).birthplace
            action = f"<search> {city} </search>"
        elif behaviour == "good":
            action = f"<answer> {task.answer[0] if isinstance(task.answer, list) else task.answer} </answer>"
        else:
            action = f"<answer> {_answer_from_top(world, result.observation, qtype, rng)} </answer>"
    completion = tokenizer.decode(traj.completion_ids, skip_special_tokens=False)
    score = env.score(completion, task)
    traj.reward, traj.correct, traj.reward_parts = float(score.reward), score.correct, dict(score.parts)
    traj.info.update(env.metrics())
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
