"""The episode loop: batched, multi-turn, token-exact rollouts.

All episodes of a batch (``samples_per_prompt`` per task) start together (each environment class's
``reset_batch`` gets all of its episodes at once) and generate together. A turn ends at a stop
string of the environment or EOS (an EOS ends the episode unless the environment's ``end_at_eos``
is False); the environment's ``step`` answers, its observation is tokenised
once and appended with ``loss_mask = 0`` (``Trajectory.append_observation``), and generation goes on
from the token sequence as it stands — prompts are rendered with the chat template once and never
re-rendered. Budgets: ``max_turns``, ``max_new_tokens`` per turn, ``max_total_tokens`` per
trajectory, ``max_obs_tokens`` per observation (cut keeping its closing tag). An episode whose
environment raises is finished with ``finish_reason="error"`` and its message; the batch goes on.
"""

from __future__ import annotations

import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Callable

from rlvr.core.environment import Environment, StepResult
from rlvr.core.registry import ENVIRONMENTS
from rlvr.core.types import Task, Trajectory, Turn
from rlvr.engines.base import Completion, SamplingParams, open_session

log = logging.getLogger(__name__)


@dataclass
class _Episode:
    env: Environment
    task: Task
    traj: Trajectory
    done: bool = False
    step_reward: float | None = None
    turn_start: int = 0
    turn_reason: str = "stop"  # what ended the turn being stepped ("stop", or "eos")
    pending: list[int] = field(default_factory=list)  # this turn's sampled tokens


def make_env_factory(env_cfg) -> Callable[[], Environment]:
    """A zero-argument factory of fresh environments from an :class:`rlvr.core.config.EnvConfig`.

    The settings are checked here, once, against the environment's declared ones (name and type),
    then the environment's ``preflight`` checks what they point at (a retrieval server, the code
    sandbox) and one environment is built: a bad setting fails before any model loads or any
    episode runs, with a message that names it."""
    cls = ENVIRONMENTS.get(env_cfg.name)
    settings = dict(env_cfg.settings or {})
    if env_cfg.verifiers:
        settings["verifiers"] = dict(env_cfg.verifiers)
    if hasattr(cls, "check_settings"):  # a plugin class need not derive from Environment
        settings = cls.check_settings(settings, where=f"environment {env_cfg.name!r} (env.settings)")
    if hasattr(cls, "preflight"):
        cls.preflight(settings)
    cls(**settings)  # what the constructor itself checks (a template's placeholders) fails now

    def factory() -> Environment:
        return cls(**settings)

    return factory


def render_prompt(tokenizer, prompt, task_id: str = "") -> list[int]:
    """Prompt → token ids. Chat messages go through the tokenizer's chat template, once."""
    if isinstance(prompt, list):
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"task {task_id}: the prompt is chat messages but the tokenizer has no chat template; "
                f"give a text prompt or set tokenizer.chat_template")
        text = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    elif isinstance(prompt, str):
        text = prompt
    else:
        raise TypeError(f"task {task_id}: the environment's prompt must be text or messages, "
                        f"got {type(prompt).__name__}")
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
        raise ValueError(f"task {task_id}: the prompt renders to no tokens")
    return ids


def check_stop_strings(tokenizer, stops: list[str], env_name: str) -> None:
    """Each stop string must survive encode → decode, or the engine can never match it."""
    for s in stops:
        ids = tokenizer.encode(s, add_special_tokens=False)
        if not s or tokenizer.decode(ids, skip_special_tokens=False) != s:
            raise ValueError(f"environment {env_name}: stop string {s!r} cannot be expressed by the "
                             f"tokenizer (it decodes back as {tokenizer.decode(ids)!r})")


_CLOSING_TAG = re.compile(r"</[A-Za-z_][\w-]*>\s*$")


def encode_observation(tokenizer, text: str, max_tokens: int) -> tuple[list[int], bool]:
    """Tokenise an observation, cutting it to ``max_tokens`` but keeping a trailing closing tag."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) <= max_tokens:
        return ids, False
    m = _CLOSING_TAG.search(text)
    tail = tokenizer.encode(m.group(0), add_special_tokens=False) if m else []
    if len(tail) >= max_tokens:
        tail = []
    body = text[: m.start()] if m else text
    return tokenizer.encode(body, add_special_tokens=False)[: max_tokens - len(tail)] + tail, True


def collect(engine, tokenizer, env_factory: Callable[[], Environment], tasks: list[Task], *,
            samples_per_prompt: int, cfg, greedy: bool = False, seed: int | None = None,
            ) -> list[Trajectory]:
    """Run ``samples_per_prompt`` episodes per task; return trajectories with rewards, grouped."""
    episodes: list[_Episode] = []
    stops: list[str] | None = None
    starts: list[tuple[Environment, Task, str]] = []
    for task in tasks:
        group_id = uuid.uuid4().hex  # unique per prompt instance, across datasets and steps
        for _ in range(samples_per_prompt):
            env = env_factory()
            bind = getattr(env, "bind_tokenizer", None)
            if bind is not None:  # environments that render turns through the chat template
                bind(tokenizer)
            if stops is None:
                stops = list(env.stop_strings)
                check_stop_strings(tokenizer, stops, type(env).__name__)
            starts.append((env, task, group_id))
    prompts = _reset_all([(env, task) for env, task, _ in starts])
    last: tuple = (None, None)  # (prompt, ids): a group's samples mostly reset to the same prompt
    for (env, task, group_id), prompt in zip(starts, prompts):
        try:
            if isinstance(prompt, Exception):
                raise prompt
            if last[1] is not None and type(prompt) is type(last[0]) and prompt == last[0]:
                ids = list(last[1])  # the chat template renders it once per group, not per sample
            else:
                ids = render_prompt(tokenizer, prompt, task.id)
                last = (prompt, ids)
            if len(ids) >= cfg.max_total_tokens:
                raise ValueError(f"task {task.id}: the prompt has {len(ids)} tokens, not below "
                                 f"rollout.max_total_tokens = {cfg.max_total_tokens}")
            traj = Trajectory.from_prompt(ids, group_id=group_id, task_id=task.id)
            episodes.append(_Episode(env, task, traj))
        except Exception as e:
            traj = Trajectory.from_prompt([], group_id=group_id, task_id=task.id)
            ep = _Episode(env, task, traj)
            _fail(ep, f"reset failed: {type(e).__name__}: {e}")
            episodes.append(ep)

    session = open_session(engine)  # an episode's KV cache lives on between its turns
    try:
        # one turn per episode: nothing to overlap, and the lockstep loop's column writes are cheaper
        if (cfg.max_turns > 1 and getattr(cfg, "continuous_turns", True)
                and getattr(session, "continuous", lambda: False)()):
            _run_continuous(session, episodes, tokenizer, stops or [], cfg, greedy, seed)
        else:
            _run_lockstep(session, episodes, tokenizer, stops or [], cfg, greedy, seed)
    finally:
        session.close()

    _score_all(episodes, tokenizer, getattr(cfg, "score_timeout_s", 0.0))
    return [ep.traj for ep in episodes]


def _cap(ep: _Episode, cfg) -> int:
    """The episode's own budget for its next turn: one long episode must not shorten its
    batch-mates' turns."""
    return max(1, min(cfg.max_new_tokens, cfg.max_total_tokens - len(ep.traj)))


def _params(cfg, stops: list[str], greedy: bool, seed: int | None, turn: int, max_new: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=max_new, temperature=0.0 if greedy else cfg.temperature,
                          top_p=1.0 if greedy else cfg.top_p, stop=stops,
                          seed=None if seed is None else seed * 1000 + turn)


def _end_turn(ep: _Episode, out: Completion, cap: int, tokenizer, cfg,
              stepping: list[tuple[_Episode, str]]) -> None:
    """Record a turn's completion; the episode either ends here or goes to ``stepping`` with
    the action text its environment reads."""
    if len(out.token_ids) > cap:
        out = Completion(out.token_ids[:cap], out.logprobs[:cap], "length")
    start = len(ep.traj)
    ep.traj.append_sampled(out.token_ids, out.logprobs)
    ep.turn_start, ep.turn_reason = start, out.finish_reason
    if out.finish_reason == "stop":
        stepping.append((ep, tokenizer.decode(out.token_ids, skip_special_tokens=False)))
        return
    if out.finish_reason == "eos" and not getattr(ep.env, "end_at_eos", True):
        # the environment reads the turn (its text without the EOS token) and may go on;
        # the EOS token itself stays in the trajectory as sampled
        stepping.append((ep, tokenizer.decode(out.token_ids[:-1], skip_special_tokens=False)))
        return
    ep.traj.turns.append(Turn(start, len(ep.traj), len(ep.traj), out.finish_reason))
    if out.finish_reason == "eos":
        _finish(ep, "eos")
    elif len(ep.traj) >= cfg.max_total_tokens:
        _finish(ep, "max_total_tokens", truncated=True)
    else:
        _finish(ep, "max_new_tokens", truncated=True)


def _run_continuous(session, episodes: list[_Episode], tokenizer, stops, cfg, greedy, seed) -> None:
    """Every episode in one engine call: an episode whose turn ends is stepped at once (with
    the others that ended at the same decode step, batched by class) and samples its next turn
    while the rest are still in theirs."""
    active = [ep for ep in episodes if not ep.done]
    if not active:
        return
    caps = [_cap(ep, cfg) for ep in active]

    def on_turn(ended: list[tuple[int, Completion]]) -> list[tuple[list[int], int] | None]:
        stepping: list[tuple[_Episode, str]] = []
        fed = {}
        for i, out in ended:
            ep = active[i]
            _end_turn(ep, out, caps[i], tokenizer, cfg, stepping)
            fed[i] = len(ep.traj)  # the engine holds every token up to here
        _step_all(stepping, tokenizer, cfg)
        answers: list[tuple[list[int], int] | None] = []
        for i, _ in ended:
            ep = active[i]
            if ep.done:
                answers.append(None)
                continue
            caps[i] = _cap(ep, cfg)
            answers.append((ep.traj.token_ids[fed[i]:], caps[i]))
        return answers

    try:
        session.run([ep.traj.token_ids for ep in active], _params(cfg, stops, greedy, seed, 0, max(caps)),
                    caps, on_turn)
    except Exception as e:  # the engine itself failed: every episode still going records it
        for ep in active:
            if not ep.done:
                _fail(ep, f"engine failed: {type(e).__name__}: {e}")
        log.error("engine failed: %s", e)


def _run_lockstep(session, episodes: list[_Episode], tokenizer, stops, cfg, greedy, seed) -> None:
    """Turn by turn: every episode still going samples its next turn in one engine call."""
    turn = 0
    while True:
        active = [ep for ep in episodes if not ep.done]
        if not active:
            break
        # The batch samples up to the largest budget; a longer completion is cut to its own.
        caps = [_cap(ep, cfg) for ep in active]
        params = _params(cfg, stops, greedy, seed, turn, max(caps))
        try:
            outs = session.generate([id(ep) for ep in active], [ep.traj.token_ids for ep in active],
                                    params)
        except Exception as e:  # the engine itself failed: every active episode records it
            for ep in active:
                _fail(ep, f"engine failed: {type(e).__name__}: {e}")
            log.error("engine failed on turn %d: %s", turn, e)
            break
        stepping: list[tuple[_Episode, str]] = []
        for ep, out, cap in zip(active, outs, caps):
            _end_turn(ep, out, cap, tokenizer, cfg, stepping)
        _step_all(stepping, tokenizer, cfg)
        turn += 1


def _reset_all(starts: list[tuple[Environment, Task]]) -> list:
    """Every episode's prompt (or the exception its reset raised), batched by environment class
    through ``reset_batch`` as :func:`_step_all` batches turns."""
    prompts: list = [None] * len(starts)
    by_cls: dict[type, list[int]] = {}
    for i, (env, _) in enumerate(starts):
        by_cls.setdefault(type(env), []).append(i)
    for cls, idx in by_cls.items():
        try:
            got = cls.reset_batch([starts[i][0] for i in idx], [starts[i][1] for i in idx])
            if len(got) != len(idx):
                raise RuntimeError(f"reset_batch returned {len(got)} prompts for {len(idx)} tasks")
        except Exception:  # isolate the failure to the episodes that cause it
            got = []
            for i in idx:
                env, task = starts[i]
                try:
                    got.append(env.reset(task))
                except Exception as e:
                    got.append(e)
        for i, prompt in zip(idx, got):
            prompts[i] = prompt
    return prompts


def _step_all(stepping: list[tuple[_Episode, str]], tokenizer, cfg) -> None:
    """Call the environment on every episode whose turn ended with a stop string (or with EOS,
    where the environment's ``end_at_eos`` is False), batched by class."""
    by_cls: dict[type, list[tuple[_Episode, str]]] = {}
    for ep, action in stepping:
        by_cls.setdefault(type(ep.env), []).append((ep, action))
    for cls, items in by_cls.items():
        try:
            results = cls.step_batch([ep.env for ep, _ in items], [a for _, a in items])
            if len(results) != len(items):
                raise RuntimeError(f"step_batch returned {len(results)} results for {len(items)} actions")
        except Exception:  # isolate the failure to the episodes that cause it
            results = []
            for ep, action in items:
                try:
                    results.append(ep.env.step(action))
                except Exception as e:
                    results.append(e)
        for (ep, _), res in zip(items, results):
            _apply(ep, res, tokenizer, cfg)


def _apply(ep: _Episode, res: StepResult | Exception, tokenizer, cfg) -> None:
    traj = ep.traj
    action_end = len(traj)
    if isinstance(res, Exception):
        traj.turns.append(Turn(ep.turn_start, action_end, action_end, ep.turn_reason))
        _fail(ep, f"step failed: {type(res).__name__}: {res}")
        return
    traj.tool_calls += res.tool_calls or ([res.tool_call] if res.tool_call is not None else [])
    if res.reward is not None:
        ep.step_reward = float(res.reward)
    if res.done:
        traj.turns.append(Turn(ep.turn_start, action_end, action_end, ep.turn_reason))
        _finish(ep, "done")
        return
    room = cfg.max_total_tokens - len(traj)
    budget = min(cfg.max_obs_tokens, max(room, 0))
    pre = getattr(res, "observation_ids", None)  # a chat-template delta, already token ids
    if pre is not None:
        obs, cut = list(pre)[:budget], len(pre) > budget
    else:
        obs, cut = encode_observation(tokenizer, res.observation, budget)
    traj.append_observation(obs)
    traj.turns.append(Turn(ep.turn_start, action_end, len(traj), ep.turn_reason))
    if cut:
        traj.info["observations_truncated"] = traj.info.get("observations_truncated", 0) + 1
    if len(traj.turns) >= cfg.max_turns:
        _finish(ep, "max_turns", truncated=True)
    elif len(traj) >= cfg.max_total_tokens:
        _finish(ep, "max_total_tokens", truncated=True)


def _finish(ep: _Episode, reason: str, truncated: bool = False) -> None:
    ep.done = True
    ep.traj.finish_reason = reason
    ep.traj.truncated = truncated


def _fail(ep: _Episode, message: str) -> None:
    log.warning("episode of task %s failed: %s", ep.task.id, message)
    _finish(ep, "error")
    ep.traj.error = message


def _score_all(episodes: list[_Episode], tokenizer, timeout_s: float) -> None:
    """Score every episode; each ``env.score`` call gets ``timeout_s`` seconds (0 = no deadline).

    The calls run one after another in a daemon thread; one past its deadline becomes that
    episode's ``score_error`` (naming the phase, the task and the deadline), and a fresh thread
    scores the rest. A Python call cannot be killed, so the stuck thread is abandoned (it dies
    with the process); a verifier that can hang for real belongs in the verifier pool's worker
    processes (``rlvr.core.scoring``), as math-verify is."""
    jobs = [ep for ep in episodes if _prepare_score(ep)]
    completions = [tokenizer.decode(ep.traj.completion_ids, skip_special_tokens=False) for ep in jobs]
    if not timeout_s:  # no deadline to keep: score in this thread (a handoff costs ~1 ms)
        for ep, text in zip(jobs, completions):
            _apply_score(ep, _score_one(ep, text))
        return
    results: dict[int, object] = {}
    done = threading.Condition()
    start = 0
    while start < len(jobs):
        def work(first: int = start) -> None:
            for i in range(first, len(jobs)):
                r = _score_one(jobs[i], completions[i])
                with done:
                    if i in results:  # given up on already
                        return
                    results[i] = r
                    done.notify_all()

        threading.Thread(target=work, daemon=True, name="rlvr-score").start()
        i = start
        with done:
            while i < len(jobs):
                if i not in results and not done.wait_for(lambda: i in results,
                                                          timeout=timeout_s or None):
                    results[i] = TimeoutError(
                        f"phase score: task {jobs[i].task.id} was still being scored after "
                        f"rollout.score_timeout_s = {timeout_s:g} s")
                    i += 1
                    break  # that thread is stuck: a new one takes the rest
                i += 1
        start = i
    for i, ep in enumerate(jobs):
        _apply_score(ep, results[i])


def _score_one(ep: _Episode, completion: str):
    try:
        return ep.env.score(completion, ep.task)
    except Exception as e:  # a scoring failure is the episode's, never the batch's
        return e


def _prepare_score(ep: _Episode) -> bool:
    """Metrics, errors and step rewards; True when the environment must still score the episode."""
    traj = ep.traj
    try:
        traj.info.update(ep.env.metrics())
    except Exception as e:
        traj.info["metrics_error"] = str(e)
    if traj.error is not None:
        traj.reward, traj.correct = 0.0, False
        return False
    if ep.step_reward is not None:
        traj.reward = ep.step_reward
        return False
    return True


def _apply_score(ep: _Episode, score) -> None:
    traj = ep.traj
    if isinstance(score, BaseException):
        traj.reward, traj.correct = 0.0, False
        traj.info["score_error"] = (str(score) if isinstance(score, TimeoutError)
                                    else f"{type(score).__name__}: {score}")
        return
    traj.reward, traj.correct, traj.reward_parts = float(score.reward), score.correct, dict(score.parts)
    if score.reason:
        traj.info["score_reason"] = score.reason
