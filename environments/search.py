"""Search-augmented QA environments: Search-R1's protocol and the two baselines of its paper.

``search`` (Jin et al., 2025, "Search-R1", arXiv:2503.09516)::

    user:      Answer the given question. ... Question: Who wrote Hamlet?
    assistant: <think> ... </think> <search> Hamlet author </search>   ← turn ends at </search>
    env:       \\n\\n<information>Doc 1(Title: Hamlet) ...</information>\\n\\n   ← loss_mask = 0
    assistant: <think> ... </think> <answer> William Shakespeare </answer>   ← ends the episode

All searches that end in the same turn of a batch go to the index (or the retrieval server) as one
call (:meth:`SearchEnv.step_batch`). A turn with neither a search nor an answer — one that ends
with EOS included — gets Search-R1's corrective message and the episode goes on, as in Search-R1's
generation loop (``search_r1/llm_agent/generation.py``, ``execute_predictions``), until the turn
budget runs out; the setting ``end_at_eos: true`` ends the episode at EOS instead. Every turn of
the policy counts as an action, so ``env/valid_action_ratio`` is the share of turns that searched
or answered. A failed retrieval becomes an error observation for that episode only. The reward is ``qa_em`` on the policy's own text (retrieved passages are removed first, so a
passage that happens to contain ``<answer>`` can never be scored); other verifiers (e.g. a format
bonus) join through ``verifiers`` weights.

``search_direct`` answers without retrieval; ``search_rag`` retrieves once with the question and puts
the passages in the prompt (the questions of a whole batch go to the index as one call,
:meth:`RagEnv.reset_batch`). Both end at ``</answer>`` after one turn.

Deliberate deviations from Search-R1: an empty ``<search></search>`` is an invalid action (Search-R1
sends the empty query to the retriever); a query is cut at :data:`MAX_QUERY_CHARS` characters; the
EOS token of a turn that ends with one stays in the trajectory, sampled and trained (Search-R1
decodes each turn without special tokens and re-encodes it, so its EOS disappears; rlvr never
re-encodes sampled tokens); a turn cut by ``rollout.max_new_tokens`` ends the episode (a budget,
counted as an invalid action) where Search-R1 appends the corrective message.

A ``retriever_url`` is probed once when the run starts (:meth:`_QAEnv.preflight`): a server that
does not answer fails the run there, naming the URL, rather than every search of every episode.

Indexes are loaded once per process (cached by resolved path) and shared by every episode; clients of
a retrieval server are cached by URL.
"""

from __future__ import annotations

import logging
import re
import threading
from pathlib import Path
from typing import Any

import rlvr
from rlvr.core.environment import Environment, StepResult
from rlvr.core.types import Score, Task, ToolCall
from rlvr.retrieval.base import format_passages, load_index
from rlvr.retrieval.client import RetrievalClient

log = logging.getLogger(__name__)

#: Search-R1's instruction (scripts/data_process/nq_search.py, template "base").
SEARCH_R1_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first every time you get new "
    "information. After reasoning, if you find you lack some knowledge, you can call a search engine "
    "by <search> query </search> and it will return the top searched results between <information> "
    "and </information>. You can search as many times as your want. If you find no further external "
    "knowledge needed, you can directly provide the answer inside <answer> and </answer>, without "
    "detailed illustrations. For example, <answer> Beijing </answer>. Question: {question}\n"
)

#: The no-retrieval baseline: reason, then answer in the same format (the paper's "R1" row).
DIRECT_TEMPLATE = (
    "Answer the given question. "
    "You must conduct reasoning inside <think> and </think> first. After reasoning, provide the "
    "answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>. Question: {question}\n"
)

#: The retrieve-once baseline (the paper's "RAG" row): passages first, then the question.
RAG_TEMPLATE = (
    "Answer the given question using the retrieved documents below. "
    "You must conduct reasoning inside <think> and </think> first. After reasoning, provide the "
    "answer inside <answer> and </answer>, without detailed illustrations. For example, "
    "<answer> Beijing </answer>.\n\nDocuments:\n{passages}\nQuestion: {question}\n"
)

#: Search-R1's reply to an action with neither a complete <search> nor a complete <answer>.
INVALID_ACTION_MESSAGE = (
    "\nMy previous action is invalid. "
    "If I want to search, I should put the query between <search> and </search>. "
    "If I want to give the final answer, I should put the answer between <answer> and </answer>. "
    "Let me try again.\n"
)

MAX_QUERY_CHARS = 1000
#: Seconds the start-of-run probe of a ``retriever_url`` may take (one try, no retries).
PREFLIGHT_TIMEOUT_S = 5.0

# The first complete <search>…</search> or <answer>…</answer> whose body opens no other action tag
# (Search-R1 takes the first match too; the loop's stop strings leave at most one closing tag).
_ACTION = re.compile(r"<(search|answer)>((?:(?!<(?:search|answer)>).)*?)</\1>", re.S)
_FIELD = re.compile(r"\{(question|passages)\}")
_INFORMATION = re.compile(r"<information>.*?(?:</information>|$)", re.S)


def information_block(passages: str) -> str:
    """The observation appended after a search: Search-R1's exact framing of the passages."""
    return f"\n\n<information>{passages.strip()}</information>\n\n"


def parse_action(text: str) -> tuple[str | None, str]:
    """``("search" | "answer" | None, stripped content)`` of one turn of policy text."""
    m = _ACTION.search(text or "")
    if m is None:
        return None, ""
    return m.group(1), m.group(2).strip()


def strip_information(completion: str) -> str:
    """The policy's own text: every ``<information>`` block emptied of its passages. The empty
    tags stay, so a format verifier still sees Search-R1's think / search / information grammar."""
    return _INFORMATION.sub(
        lambda m: "<information></information>" if m.group(0).endswith("</information>")
        else "<information>", completion)


# -- shared retrievers ---------------------------------------------------------------------------

_INDEXES: dict[str, Any] = {}
_CLIENTS: dict[str, Any] = {}
_LOCK = threading.Lock()


def shared_index(index_dir: str | Path) -> Any:
    """The index saved in ``index_dir``, loaded once per process and shared."""
    key = str(Path(index_dir).expanduser().resolve())
    with _LOCK:
        if key not in _INDEXES:
            if not Path(key).is_dir():
                raise FileNotFoundError(f"search index directory {index_dir} does not exist "
                                        f"(build one with `rlvr index build`)")

            _INDEXES[key] = load_index(key)
        return _INDEXES[key]


def shared_client(url: str) -> Any:
    """One :class:`rlvr.retrieval.RetrievalClient` per server URL, shared."""
    with _LOCK:
        if url not in _CLIENTS:
            _CLIENTS[url] = RetrievalClient(url)
        return _CLIENTS[url]


def resolve_retriever(index: Any = None, index_dir: str | None = None,
                      retriever_url: str | None = None, env_name: str = "search") -> Any:
    """Exactly one of an in-process index object, an index directory or a server URL → retriever."""
    given = [n for n, v in (("index", index), ("index_dir", index_dir),
                            ("retriever_url", retriever_url)) if v]
    if len(given) != 1:
        raise ValueError(f"environment {env_name} needs exactly one of the settings index, index_dir "
                         f"or retriever_url; got {', '.join(given) or 'none'}")
    if index is not None:
        if not callable(getattr(index, "search", None)):
            raise TypeError(f"environment {env_name}: setting index must have search(queries, k), "
                            f"got {type(index).__name__}")
        return index
    return shared_index(index_dir) if index_dir else shared_client(retriever_url)


def check_retriever_url(url: str, env_name: str = "search") -> None:
    """One probe search (``/retrieve``, which Search-R1's own server has too) with a short timeout;
    a ValueError naming the URL and the setting when the server does not answer it."""
    try:
        with RetrievalClient(url, timeout_s=PREFLIGHT_TIMEOUT_S, retries=0) as client:
            client.search(["retrieval preflight probe"], 1)
    except Exception as e:
        raise ValueError(f"environment {env_name}: setting retriever_url = {url!r} did not answer a "
                         f"probe search ({type(e).__name__}: {e}); start the server (`rlvr serve`) "
                         f"or fix the URL") from None


def format_hits(hits: list) -> str:
    return format_passages(hits)


# -- environments --------------------------------------------------------------------------------

class _QAEnv(Environment):
    """What the three QA environments share: the template, the reward and the counters."""

    verifiers = {"qa_em": 1.0}
    #: the prompt: ``{question}`` (and, for search_rag, ``{passages}``) filled in
    template: str = SEARCH_R1_TEMPLATE
    #: wrap the filled template as one user message (the chat template applies); false = plain text
    chat: bool = True

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if "{question}" not in self.template:
            raise ValueError(f"{type(self).__name__}: setting template must contain {{question}}")
        self.actions = 0
        self.searches = 0
        self.invalid_actions = 0
        self.retrieval_errors = 0
        self.answered = 0

    @classmethod
    def preflight(cls, settings: dict[str, Any]) -> None:
        """A configured retrieval server must answer a probe search."""
        if settings.get("retriever_url"):
            check_retriever_url(settings["retriever_url"], cls.__name__)

    def question(self, task: Task) -> str:
        """Search-R1's question normalisation: stripped, ending with a question mark."""
        q = str(task.prompt).strip()
        return q if q.endswith("?") else q + "?"

    def fill(self, task: Task, **fields: str) -> str | list[dict[str, str]]:
        # One substitution pass, not str.format: a template may hold other braces (JSON examples),
        # and a question or passage containing "{passages}" must stay as written.
        values = {"question": self.question(task), **fields}
        text = _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), self.template)
        if not self.chat:
            return text
        messages = [{"role": "user", "content": text}]
        if self.system_prompt:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        return messages

    def reset(self, task: Task) -> str | list[dict[str, str]]:
        self.task = task
        if not isinstance(task.prompt, str):
            return task.prompt  # already rendered (e.g. a Search-R1 parquet row): used as is
        return self.fill(task)

    def score(self, completion: str, task: Task) -> Score:
        # The invalid-action reminder is this environment's text, not the policy's: its
        # "<answer> and </answer>" must never read as an answer or a well-formed tag.
        policy_text = strip_information(completion).replace(INVALID_ACTION_MESSAGE.strip(), "")
        return super().score(policy_text, task)

    def metrics(self) -> dict[str, float]:
        return {"actions": float(self.actions), "searches": float(self.searches),
                "invalid_actions": float(self.invalid_actions),
                "retrieval_errors": float(self.retrieval_errors), "answered": float(self.answered)}

    @classmethod
    def batch_metrics(cls, trajectories: list) -> dict[str, float]:
        """:func:`search_metrics`, logged by the learners with every training step."""
        return search_metrics(trajectories)


def search_metrics(trajectories: list) -> dict[str, float]:
    """Per-batch numbers of the QA environments from each trajectory's ``info`` (the episodes'
    :meth:`metrics`) and turns: searches per trajectory, the share of the policy's turns that were
    valid actions (a search or an answer), the share of trajectories that answered, and retrieval
    failures per trajectory. A turn the environment never saw — ended by EOS under
    ``end_at_eos``, or cut by a token budget — holds no complete action, so it counts as invalid
    (Search-R1's ``valid_action_stats`` count every turn the same way)."""
    trajs = [t for t in trajectories if "answered" in t.info]
    if not trajs:
        return {}
    n = len(trajs)
    valid = sum(t.info.get("actions", 0.0) - t.info.get("invalid_actions", 0.0) for t in trajs)
    turns = sum(max(float(len(t.turns)), t.info.get("actions", 0.0)) for t in trajs)
    out = {"env/searches": sum(t.info.get("searches", 0.0) for t in trajs) / n,
           "env/answered": sum(t.info.get("answered", 0.0) for t in trajs) / n,
           "env/retrieval_errors": sum(t.info.get("retrieval_errors", 0.0) for t in trajs) / n}
    if turns:  # no turn at all (every reset failed): there is no share to report
        out["env/valid_action_ratio"] = valid / turns
    return out


@rlvr.environment("search")
class SearchEnv(_QAEnv):
    """Search-R1: <search> q </search> retrieves top-k passages; <answer> ends; reward qa_em."""

    stop_strings = ["</search>", "</answer>"]
    #: passages per search
    topk: int = 3
    #: an in-process index object with search(queries, k)
    index: Any = None
    #: a saved index (`rlvr index build`), loaded once per process
    index_dir: str | None = None
    #: a retrieval server (`rlvr serve`, or Search-R1's own), probed when the run starts
    retriever_url: str | None = None
    #: Search-R1 continues after a turn without an action, whatever ended it, with its corrective
    #: message; true ends the episode at EOS instead (an instruct model ends every turn with EOS)
    end_at_eos: bool = False

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if int(self.topk) < 1:
            raise ValueError(f"{type(self).__name__}: setting topk must be >= 1, got {self.topk}")
        self.retriever = resolve_retriever(self.index, self.index_dir, self.retriever_url,
                                           type(self).__name__)

    def step(self, action: str) -> StepResult:
        return type(self).step_batch([self], [action])[0]

    @classmethod
    def step_batch(cls, envs: list["SearchEnv"], actions: list[str]) -> list[StepResult]:
        """All searches of one turn go to each retriever as one batched call."""
        results: list[StepResult | None] = [None] * len(envs)
        pending: dict[tuple[int, int], list[tuple[int, str]]] = {}  # (retriever, k) → [(i, query)]
        for i, (env, action) in enumerate(zip(envs, actions)):
            env.actions += 1
            kind, content = parse_action(action)
            if kind == "answer":
                env.answered = 1
                results[i] = StepResult(done=True, tool_call=ToolCall("answer", content))
            elif kind == "search" and content:
                env.searches += 1
                pending.setdefault((id(env.retriever), int(env.topk)), []).append(
                    (i, content[:MAX_QUERY_CHARS]))
            else:
                env.invalid_actions += 1
                why = "empty search query" if kind == "search" else "no <search> or <answer>"
                results[i] = StepResult(observation=INVALID_ACTION_MESSAGE, tool_call=ToolCall(
                    "invalid", (action or "")[-200:], valid=False, error=why))
        for (_, k), items in pending.items():
            retriever = envs[items[0][0]].retriever
            queries = [q for _, q in items]
            try:
                hits = retriever.search(queries, k)
                if len(hits) != len(queries):
                    raise RuntimeError(f"{len(hits)} results for {len(queries)} queries")
                blocks = [format_hits(h) for h in hits]
            except Exception as e:  # the episode sees the failure; the batch goes on
                log.warning("retrieval failed for %d queries: %s", len(queries), e)
                message = f"{type(e).__name__}: {str(e)[:200]}"
                for i, q in items:
                    envs[i].retrieval_errors += 1
                    results[i] = StepResult(
                        observation=information_block(f"Search failed ({message}). No documents."),
                        tool_call=ToolCall("search", q, valid=True, error=message))
                continue
            for (i, q), block in zip(items, blocks):
                results[i] = StepResult(observation=information_block(block),
                                        tool_call=ToolCall("search", q))
        return results  # type: ignore[return-value]


@rlvr.environment("search_direct")
class DirectEnv(_QAEnv):
    """No-retrieval baseline: reason, then <answer> directly in one turn; reward qa_em."""

    stop_strings = ["</answer>"]
    template = DIRECT_TEMPLATE

    def step(self, action: str) -> StepResult:
        self.actions += 1
        kind, content = parse_action(action)
        if kind == "answer":
            self.answered = 1
            return StepResult(done=True, tool_call=ToolCall("answer", content))
        self.invalid_actions += 1
        return StepResult(done=True, tool_call=ToolCall("invalid", action[-200:], valid=False))


@rlvr.environment("search_rag")
class RagEnv(DirectEnv):
    """Retrieve-once baseline: top-k passages for the question in the prompt, then <answer>."""

    template = RAG_TEMPLATE
    topk: int = 3
    index: Any = None
    index_dir: str | None = None
    retriever_url: str | None = None

    def __init__(self, **settings: Any) -> None:
        super().__init__(**settings)
        if "{passages}" not in self.template:
            raise ValueError(f"{type(self).__name__}: setting template must contain {{passages}}")
        self.retriever = resolve_retriever(self.index, self.index_dir, self.retriever_url,
                                           type(self).__name__)

    def reset(self, task: Task) -> str | list[dict[str, str]]:
        return type(self).reset_batch([self], [task])[0]

    @classmethod
    def reset_batch(cls, envs: list["RagEnv"], tasks: list[Task]) -> list:
        """All questions of a batch go to each retriever as one call, each distinct question once
        (the samples of one prompt share it). A failed call leaves its episodes a prompt without
        documents, counted in ``retrieval_errors``, rather than losing the examples."""
        for task in tasks:
            if not isinstance(task.prompt, str):
                raise ValueError(f"task {task.id}: search_rag needs the question as text")
        passages: list[str] = [""] * len(envs)
        pending: dict[tuple[int, int], list[int]] = {}  # (retriever, k) → episode indices
        for i, (env, task) in enumerate(zip(envs, tasks)):
            env.task = task
            env.searches = 1
            pending.setdefault((id(env.retriever), int(env.topk)), []).append(i)
        for (_, k), idx in pending.items():
            asked = [envs[i].question(tasks[i]) for i in idx]
            questions = list(dict.fromkeys(asked))
            try:
                hits = envs[idx[0]].retriever.search(questions, k)
                if len(hits) != len(questions):
                    raise RuntimeError(f"{len(hits)} results for {len(questions)} queries")
                found = {q: format_hits(h).strip() for q, h in zip(questions, hits)}
            except Exception as e:
                log.warning("retrieval failed for %d questions: %s", len(questions), e)
                found = {q: f"(retrieval failed: {type(e).__name__})" for q in questions}
                for i in idx:
                    envs[i].retrieval_errors = 1
            for i, q in zip(idx, asked):
                passages[i] = found[q]
        return [env.fill(task, passages=p + "\n") for env, task, p in zip(envs, tasks, passages)]
