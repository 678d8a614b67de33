"""Token-exact multi-turn through a chat template: tool messages appended as template deltas.

The trajectory of a tool conversation is the prompt the template renders, then the policy's sampled
tokens, then for each tool turn the tokens the template adds for the new ``role: "tool"`` messages
(with its end-of-turn and generation-prompt tokens), and so on. Sampled tokens are never
re-rendered: a delta is computed as

    without = render(history + [assistant], add_generation_prompt=False)
    with    = render(history + [assistant] + tool_messages, add_generation_prompt=True)
    delta   = with[k + 1:]   where k is the last end-of-turn token of the assistant turn in without

and ``with`` must start with ``without`` token for token. The assistant message is rendered from
the decoded sampled text only to find where its turn ends; its tokens are not used. What the
template puts after the end-of-turn token (ChatML's new line) belongs to the delta, since the
policy stopped at the end-of-turn token.

A template is *prefix-preserving* for a conversation shape when every such ``with`` extends its
``without`` and every generation prompt is the start of the assistant turn the template would
render. :meth:`ChatRenderer.check_prefix_preserving` checks this once on a probe conversation of
the run's shape and raises :class:`TemplateError` naming the template and the first token that
differs.

Templates that ignore ``tools=`` (the tiny test tokenizer's ChatML, SmolLM2) get the tool schemas
in the system message, with Hermes-style instructions; the model then answers in ``<tool_call>``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

#: End-of-turn tokens of common templates, looked up in the vocabulary besides the EOS token.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "</s>",
                      "<|endoftext|>")

FALLBACK_TOOLS_PROMPT = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n"
    "{tools}\n</tools>\n\nFor each function call, return a json object with function name and "
    "arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{{"name": <function-name>, "arguments": <args-json-object>}}\n</tool_call>')


class TemplateError(ValueError):
    """A chat template that cannot give token-exact tool turns; the message names it."""


def template_name(tokenizer) -> str:
    """How messages name a tokenizer's template: its model path and a short hash of the template."""
    t = getattr(tokenizer, "chat_template", None) or ""
    digest = hashlib.sha1(t.encode()).hexdigest()[:8] if isinstance(t, str) else "dict"
    return f"the chat template of {getattr(tokenizer, 'name_or_path', '') or 'the tokenizer'} " \
           f"(sha1 {digest})"


def end_of_turn_ids(tokenizer) -> set[int]:
    """Token ids that can end an assistant turn: the EOS token and known end-of-turn tokens."""
    ids = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    vocab = tokenizer.get_vocab()
    ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
    return ids


def first_difference(a: list[int], b: list[int]) -> int:
    """The first index where ``a`` and ``b`` differ (``min(len)`` when one is a prefix of the other)."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


class ChatRenderer:
    """Renders one conversation shape of one tokenizer, with tool schemas, as token ids."""

    def __init__(self, tokenizer, tools: list[dict] | None = None) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise TemplateError(f"{template_name(tokenizer)}: the tokenizer has no chat template; "
                                f"the tools environment renders every turn through one")
        self.tokenizer = tokenizer
        self.tools = list(tools or [])
        self.name = template_name(tokenizer)
        self.eot_ids = end_of_turn_ids(tokenizer)
        # a template that ignores tools= renders the same text with and without them
        probe = [{"role": "user", "content": "hi"}]
        self.template_has_tools = bool(self.tools) and (
            self._text(probe, True, self.tools) != self._text(probe, True, None))

    # -- rendering ------------------------------------------------------------------------------
    def _text(self, messages: list[dict], add_generation_prompt: bool, tools) -> str:
        kwargs = {"tools": tools} if tools else {}
        return self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=add_generation_prompt, tokenize=False, **kwargs)

    def with_tools(self, messages: list[dict]) -> list[dict]:
        """The messages as rendered: with the tool schemas in the system message when the template
        cannot take ``tools=`` itself."""
        if not self.tools or self.template_has_tools:
            return list(messages)
        block = FALLBACK_TOOLS_PROMPT.format(tools="\n".join(json.dumps(t) for t in self.tools))
        if messages and messages[0].get("role") == "system":
            first = dict(messages[0], content=f"{messages[0]['content']}\n\n{block}")
            return [first, *messages[1:]]
        return [{"role": "system", "content": block}, *messages]

    def render_text(self, messages: list[dict], add_generation_prompt: bool) -> str:
        return self._text(self.with_tools(messages), add_generation_prompt,
                          self.tools if self.template_has_tools else None)

    def render_ids(self, messages: list[dict], add_generation_prompt: bool) -> list[int]:
        # the same encoding the episode loop gives a text prompt (rlvr.rollout.episodes.render_prompt)
        return self.tokenizer.encode(self.render_text(messages, add_generation_prompt),
                                     add_special_tokens=False)

    # -- deltas ---------------------------------------------------------------------------------
    def observation_ids(self, history: list[dict], assistant_text: str,
                        new_messages: list[dict]) -> list[int]:
        """The tokens after the policy's end-of-turn token up to the next generation prompt, for
        ``new_messages`` (the turn's tool results) following an assistant turn of ``history``."""
        asst = {"role": "assistant", "content": assistant_text}
        start = len(self.render_ids(history, True))
        without = self.render_ids([*history, asst], False)
        with_ = self.render_ids([*history, asst, *new_messages], True)
        self._require_prefix(without, with_, "appending tool messages changes the tokens before them")
        ends = [i for i in range(start, len(without)) if without[i] in self.eot_ids]
        if not ends:
            raise TemplateError(f"{self.name}: no end-of-turn token (ids {sorted(self.eot_ids)}) "
                                f"closes the assistant turn; cannot tell where the tool turn starts")
        return with_[ends[-1] + 1:]

    def _require_prefix(self, shorter: list[int], longer: list[int], what: str) -> None:
        i = first_difference(shorter, longer)
        if i == len(shorter):
            return
        dec = self.tokenizer.decode
        got = repr(dec([longer[i]])) if i < len(longer) else "(end of text)"
        raise TemplateError(
            f"{self.name} is not prefix-preserving for this conversation: {what}. First differing "
            f"token at position {i}: {dec([shorter[i]])!r} (id {shorter[i]}) becomes {got} "
            f"(after {dec(shorter[max(0, i - 12):i])!r}). Sampled tokens are never re-rendered, so "
            f"this template cannot give token-exact tool turns; use a template whose earlier "
            f"turns do not change when a message is added")

    def check_prefix_preserving(self, history: list[dict], call_text: str,
                                tool_messages: list[dict], answer_text: str = "done") -> None:
        """Raise :class:`TemplateError` unless the conversation ``history`` → assistant
        ``call_text`` → ``tool_messages`` → assistant ``answer_text`` renders prefix-preserving:
        each generation prompt opens the assistant turn that follows it, and each tool delta
        extends the conversation before it."""
        asst1 = {"role": "assistant", "content": call_text}
        asst2 = {"role": "assistant", "content": answer_text}
        self._require_prefix(self.render_ids(history, True),
                             self.render_ids([*history, asst1], False),
                             "the generation prompt is not how the template starts an assistant turn")
        self.observation_ids(history, call_text, tool_messages)
        after = [*history, asst1, *tool_messages]
        self._require_prefix(self.render_ids(after, True), self.render_ids([*after, asst2], False),
                             "the generation prompt after a tool turn is not how the template "
                             "starts the next assistant turn")
        self.observation_ids(after, "x", tool_messages[:1])  # a second tool round


def render_tool_message(name: str, content: str, call_id: str) -> dict[str, Any]:
    """A ``role: "tool"`` message as chat templates read it (``name`` and ``tool_call_id`` both,
    since templates differ in which they use)."""
    return {"role": "tool", "name": name, "tool_call_id": call_id, "content": content}
