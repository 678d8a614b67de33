"""``rlvr train CONFIG --plan``: the per-GPU memory a run needs, estimated before anything loads.

Only the model's *config* is read (a directory's ``config.json``, a GGUF file's metadata, or the
tiny model's), and the parameters are counted on the ``meta`` device, so a 7B plan takes a second
and no memory. The estimate, per training rank:

- **weights, gradients, optimizer state**: rlvr keeps float32 master weights whatever
  ``model.dtype`` says (bf16 is mixed precision), AdamW holds two float32 moments; under
  ``run.parallel fsdp`` each of the three is sharded over the ranks (FSDP2 ``fully_shard``);
- **reference model** (when a KL term needs one): a frozen copy in the compute dtype (sharded
  under fsdp; none with LoRA, whose reference is the adapter-disabled base);
- **critic** (PPO with ``rl.critic separate``): a second model with its own gradients and AdamW;
- **activations** of one micro-batch: Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models", https://arxiv.org/abs/2205.05198), ``34·s·b·h`` bytes per layer
  in 16-bit (twice that in float32) without the attention-score term (SDPA / flash attention do
  not keep it); with ``model.gradient_checkpointing`` only each layer's input, ``2·s·b·h``, plus
  one layer recomputed;
- **logits**: float32 logits and their gradient at the loss positions only;
- **rollout engine**: the in-process HF engine shares the policy and adds its KV cache for the
  whole batch; under fsdp it also holds a full copy of the weights; colocated vLLM reserves
  ``rollout.vllm_gpu_memory_utilization`` of the GPU (released to the update while it sleeps).

It is an estimate to size a job before it is queued, not a measurement: allocator fragmentation,
CUDA context (~0.5 GiB) and temporary buffers come on top.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlvr.core.config import TrainConfig
from rlvr.core.models import resolve_model_path, smollm2_gguf_path

GIB = 1024 ** 3
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass
class Line:
    what: str
    bytes: float


def model_config(cfg: TrainConfig):
    """The transformers config of ``model.name_or_path``, without its weights."""
    from transformers import AutoConfig

    name = cfg.model.name_or_path
    if name == "smollm2":
        name = str(smollm2_gguf_path())
    try:
        if name.endswith(".gguf"):  # the file's metadata: no dequantised copy is made for a plan
            path = Path(name)
            return AutoConfig.from_pretrained(str(path.parent), gguf_file=path.name)
        location, _ = resolve_model_path(name, cfg.model)
        return AutoConfig.from_pretrained(location)
    except Exception as e:
        raise ValueError(f"model.name_or_path = {cfg.model.name_or_path!r}: its config could not "
                         f"be read for the plan ({type(e).__name__}: {e}); a directory with "
                         f"config.json is enough") from None


def count_parameters(config) -> int:
    """Parameters of a causal LM built from ``config``, counted on the meta device."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def plan(cfg: TrainConfig, world_size: int = 1) -> tuple[list[Line], dict]:
    """The per-rank memory lines of ``cfg`` on ``world_size`` training ranks, and the facts used."""
    mc = model_config(cfg)
    n = count_parameters(mc)
    h, layers = mc.hidden_size, mc.num_hidden_layers
    heads = mc.num_attention_heads
    kv_heads = getattr(mc, "num_key_value_heads", None) or heads
    head_dim = getattr(mc, "head_dim", None) or h // heads
    compute = BYTES[cfg.model.dtype]
    fsdp = getattr(cfg.run, "parallel", "replicate") == "fsdp"
    shard = world_size if fsdp else 1
    lora = cfg.model.lora_rank > 0
    trained = n if not lora else n * 0.01  # LoRA: adapters of ~1% of the weights
    offline = cfg.algorithm in ("sft", "dpo", "rm")
    lines = [Line(f"policy weights (float32 master{f', 1/{shard}' if shard > 1 else ''})", 4 * n / shard),
             Line("gradients (float32)", 4 * trained / shard),
             Line("optimizer state (AdamW: 2 × float32)", 8 * trained / shard)]
    needs_ref = (cfg.rl.kl_coef > 0 and not offline) or cfg.algorithm == "dpo"
    if needs_ref and not lora:
        lines.append(Line(f"reference model ({cfg.model.dtype})", compute * n / shard))
    if cfg.algorithm == "ppo" and cfg.rl.critic == "separate":
        lines.append(Line("critic (weights, gradients, AdamW)", 16 * n / shard))
    if offline:
        seq, rows = cfg.pref.max_length or 1024, cfg.optim.micro_batch_size * (2 if cfg.algorithm != "sft" else 1)
        loss_tokens = seq
    else:
        seq, rows = cfg.rollout.max_total_tokens, cfg.optim.micro_batch_size
        loss_tokens = min(seq, cfg.rollout.max_new_tokens * cfg.rollout.max_turns)
    act_bytes = 2 if compute == 2 else 4
    per_layer = 34 / 2 * act_bytes * seq * rows * h
    if getattr(cfg.model, "gradient_checkpointing", False):
        act = (2 / 2 * act_bytes * seq * rows * h) * layers + per_layer
        what = f"activations (micro-batch {rows} × {seq} tokens, checkpointed)"
    else:
        act = per_layer * layers
        what = f"activations (micro-batch {rows} × {seq} tokens)"
    lines.append(Line(what, act))
    lines.append(Line(f"logits at {loss_tokens} loss positions (float32, with gradient)",
                      8 * rows * loss_tokens * mc.vocab_size))
    facts = {"parameters": n, "model": type(mc).__name__, "world_size": world_size,
             "parallel": "fsdp" if fsdp else "replicate", "dtype": cfg.model.dtype}
    if not offline:
        batch = cfg.rl.prompts_per_step * cfg.rollout.samples_per_prompt // max(world_size, 1)
        kv = 2 * layers * kv_heads * head_dim * compute * seq * max(batch, 1)
        if cfg.rollout.servers:
            facts["engine"] = "rollout servers (their own GPUs)"
        elif cfg.rollout.engine == "vllm":
            facts["engine_reserved_fraction"] = cfg.rollout.vllm_gpu_memory_utilization
            facts["engine_sleeps"] = cfg.rollout.vllm_sleep
            facts["engine"] = "colocated vLLM"
        else:
            lines.append(Line(f"HF engine KV cache ({batch} rows × {seq} tokens)", kv))
            if fsdp:
                lines.append(Line("HF engine's full copy of the weights", 4 * n))
            facts["engine"] = "in-process HF"
    return lines, facts


def format_plan(cfg: TrainConfig, world_size: int, gpu_memory_gb: float) -> tuple[str, bool]:
    """The plan as a table, and whether it fits ``gpu_memory_gb`` per GPU."""
    lines, facts = plan(cfg, world_size)
    total = sum(x.bytes for x in lines)
    budget = gpu_memory_gb * GIB
    need = total
    unit, scale = ("GiB", GIB) if total >= GIB / 4 else ("MiB", 1024 ** 2)
    n = facts["parameters"]
    size = f"{n / 1e9:.2f} B" if n >= 1e8 else f"{n / 1e6:.2f} M"
    out = [f"memory plan: {cfg.algorithm} on {cfg.model.name_or_path} ({facts['model']}, "
           f"{size} parameters), {world_size} rank(s), run.parallel {facts['parallel']}, "
           f"model.dtype {facts['dtype']}",
           f"  {'per GPU':<66}{unit:>9}"]
    out += [f"  {x.what:<66}{x.bytes / scale:>9.2f}" for x in lines]
    out.append(f"  {'training total':<66}{total / scale:>9.2f}")
    if facts.get("engine") == "colocated vLLM":
        reserved = facts["engine_reserved_fraction"] * budget
        out.append(f"  {'colocated vLLM reservation (rollout.vllm_gpu_memory_utilization)':<66}"
                   f"{reserved / scale:>9.2f}")
        # asleep, vLLM gives its KV cache back (and, at level 1, moves its weights to the host)
        need = total if facts["engine_sleeps"] else total + reserved
        if facts["engine_sleeps"]:
            out.append("  (vLLM sleeps during the update: the update has the whole GPU)")
    elif facts.get("engine", "").startswith("rollout servers"):
        out.append(f"  rollout engine: {facts['engine']}")
    fits = need <= budget
    out.append(f"fits in {gpu_memory_gb:g} GiB per GPU: {'yes' if fits else 'NO'} "
               f"(needs about {need / GIB:.1f} GiB; an estimate, see rlvr/learners/plan.py)")
    return "\n".join(out), fits

