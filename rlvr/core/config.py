"""Typed configuration: one dataclass per concern, YAML files and ``--key value`` as overrides.

Parsing and merging go through OmegaConf structured configs, which type-check every override
against these dataclasses. A YAML file may be nested (``rollout: {samples_per_prompt: 8}``) or
flat with dotted keys (``rollout.samples_per_prompt: 8``); the command line takes
``--rollout.samples_per_prompt 8``. Defaults run a tiny CPU job.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from rlvr.core.registry import ALGORITHMS
from rlvr.core.reward_spec import parse_reward_spec, reward_as_mapping

BUNDLED_CONFIGS = Path(__file__).parent.parent / "configs"


@dataclass
class ModelConfig:
    name_or_path: str = "tiny"
    """Policy weights: a hub id, a local directory, a ``.gguf`` file, or ``tiny`` (a small random
    Llama built from a config, for tests) or ``world`` (the tiny model on the synthetic world's
    tokenizer). A ``.gguf`` file is dequantised once into a plain float32 copy under
    ``$RLVR_CACHE/gguf/`` (default ``~/.cache/rlvr/gguf/``), which later runs load."""
    tokenizer: Optional[str] = None
    """Tokenizer location when it differs from the weights'."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Compute precision. bfloat16 / float16 train with mixed precision: fp32 master weights and
    optimizer state, forward passes (and generation) under ``torch.autocast`` in this dtype."""
    hidden_size: int = 64
    """Width of the tiny model (used only when building one)."""
    num_layers: int = 2
    """Depth of the tiny model (used only when building one)."""
    seed: int = 0
    """Seed of the tiny model's random weights."""
    lora_rank: int = 0
    """0 = full fine-tuning; >0 trains a LoRA adapter (peft) and uses the adapter-disabled base as
    the reference model."""
    gradient_checkpointing: bool = False
    """Activation checkpointing of the trained model (transformers' ``activation_checkpointing_enable``,
    formerly ``gradient_checkpointing_enable``; non-reentrant): each decoder layer's activations are recomputed in the backward pass instead
    of kept, trading about one more forward pass for memory. Gradients are unchanged."""


@dataclass
class DataConfig:
    train: str = "calculator"
    """Training prompts: a bundled task name or a JSONL/parquet file."""
    eval: Optional[str] = None
    """Held-out prompts for evaluation during training (same forms as ``train``)."""
    limit: int = 0
    """Use at most this many rows of each file (0 = all)."""
    shuffle: bool = True
    """Shuffle training prompts each epoch (seeded by ``run.seed``)."""
    too_long: Literal["refuse", "skip"] = "refuse"
    """A row whose prompt has more characters than ``rollout.max_total_tokens`` × 16 cannot fit
    the token budget: refuse the data at load (naming each ``FILE:LINE``) or skip such rows with
    one warning that counts them."""


@dataclass
class EnvConfig:
    name: str = "calculator"
    """Registered environment name (``rlvr list``)."""
    verifiers: dict[str, float] = field(default_factory=dict)
    """Verifier name → weight; empty = the environment's own default."""
    settings: dict[str, Any] = field(default_factory=dict)
    """Extra keyword settings passed to the environment's constructor."""


@dataclass
class RolloutConfig:
    samples_per_prompt: int = 4
    """G: samples drawn per prompt instance (one ``group_id``)."""
    max_turns: int = 4
    """Policy turns per episode before it is cut (truncated)."""
    max_new_tokens: int = 64
    """Tokens the policy may sample in one turn."""
    max_total_tokens: int = 512
    """Whole-trajectory budget (prompt + sampled + observations)."""
    max_obs_tokens: int = 128
    """Longest observation appended in one step; longer ones are cut keeping the closing tag."""
    temperature: float = 1.0
    """Sampling temperature for training rollouts (evaluation is greedy)."""
    top_p: float = 1.0
    """Nucleus sampling mass."""
    engine: Literal["hf", "vllm"] = "hf"
    """hf | vllm."""
    continuous_turns: bool = True
    """hf: an episode's next turn starts as soon as its environment answers; False = lockstep."""
    max_batch_size: int = 0
    """Rows the hf engine runs in one forward pass; 0 = the whole rollout batch at once (fastest).
    Set it only to bound memory: the KV cache and the (rows, vocabulary) logits grow with it."""
    servers: list[str] = field(default_factory=list)
    """URLs of ``rlvr rollout-server`` processes (``[http://node1:8100, ...]``). Non-empty: each
    batch is split over them and every update's weights are pushed to them (docs/scale.md)."""
    server_timeout_s: float = 600.0
    """Longest wait, in seconds, for one rollout server's answer to one request."""
    weights_dir: str = ""
    """Directory every rollout server can read, where the trainer writes the weights it pushes;
    empty = ``engine_weights/`` in the run directory."""
    vllm_gpu_memory_utilization: float = 0.5
    """Colocated vLLM: fraction of the GPU's memory vLLM takes (weights and KV cache)."""
    vllm_sleep: bool = True
    """Colocated vLLM: free vLLM's GPU memory while the policy updates (vLLM sleep mode)."""
    vllm_sleep_level: int = 1
    """1 = vLLM's weights wait in CPU memory during the update; 2 = they are dropped (no host copy;
    each update pushes every weight anyway)."""
    vllm_max_model_len: int = 0
    """vLLM's context length in tokens; 0 = ``rollout.max_total_tokens``."""
    score_timeout_s: float = 120.0
    """Deadline of one episode's scoring (its environment's verifiers) in training and evaluation;
    past it the episode scores 0 with an error naming the phase and the task (0 = no deadline)."""
    weight_sync_check: bool = True
    """After every weight push (and before the first step) the engine greedily continues a fixed
    probe prompt and its logprobs must agree with the trainer's; a stale engine stops the run."""
    weight_sync_tol: float = 0.0
    """Largest |engine - trainer| logprob allowed on the probe; 0 = set by ``model.dtype``: 0.02 for
    float32, 0.25 for bfloat16 / float16 (their rounding alone moves logprobs by ~0.1)."""
    weight_sync_on_mismatch: Literal["error", "warn"] = "error"
    """What a probe gap over the tolerance does: ``error`` stops the run naming the step and the
    gap; ``warn`` logs it and goes on (``sync/probe_gap`` is logged every step either way)."""


@dataclass
class OptimConfig:
    lr: float = 1e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    warmup_steps: int = 0
    """Linear warm-up, in optimizer steps."""
    schedule: Literal["constant", "linear", "cosine"] = "constant"
    """constant | linear | cosine decay after warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping threshold (0 = off)."""
    micro_batch_size: int = 8
    """Sequences per forward/backward; gradients accumulate to the mini-batch."""
    length_buckets: bool = True
    """Cut each mini-batch into micro-batches after ordering its rows by length, so each
    micro-batch is padded only to its own longest row. The mini-batches and their normalisers are
    unchanged (the gradient is the same up to float summation order); False keeps row order."""


@dataclass
class RLConfig:
    """Knobs of the on-policy algorithms (``rlvr list``). Each algorithm declares which of the
    algorithm-specific ones it reads; a changed setting it cannot honour is refused."""

    prompts_per_step: int = 4
    """Prompts sampled per rollout batch (each gets ``rollout.samples_per_prompt`` samples)."""
    epochs_per_batch: int = 1
    """Passes over each rollout batch."""
    mini_batches_per_epoch: int = 1
    """Optimizer steps per pass (the rollout batch is split into this many mini-batches)."""
    clip_low: float = 0.2
    """PPO clip range below 1 (ratio >= 1 - clip_low)."""
    clip_high: float = 0.2
    """PPO clip range above 1 (clip-higher, DAPO: e.g. 0.28)."""
    loss_agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"] = "token-mean"
    """token-mean | seq-mean-token-mean | seq-mean-token-sum-norm (Dr. GRPO)."""
    share_prompts: bool = True
    """Run the decoder over each distinct prompt of a micro-batch once (the samples of a group
    share it) and every row's tokens after it on those keys and values, in the update's forward
    passes (and the reference's, and ``old_logprobs = recompute``), where the model has a plain
    head and it saves enough. Logprobs and gradients equal the whole-sequence pass up to float
    rounding; False: one pass per row."""
    std_normalize: Literal["unbiased", "biased", "none"] = "unbiased"
    """GRPO advantage std: unbiased (G-1) | biased (G) | none (Dr. GRPO)."""
    kl_coef: float = 0.0
    """β of the KL to the reference model (0 = no reference model is kept)."""
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    """k1 | k2 | k3."""
    kl_in_reward: bool = False
    """True: KL as a per-token reward penalty (PPO-RLHF); False: a separate loss term (GRPO)."""
    entropy_coef: float = 0.0
    """Entropy bonus weight."""
    filter_zero_variance: bool = False
    """Drop groups whose rewards are all equal (dynamic sampling)."""
    mask_observations: bool = True
    """Keep environment tokens out of the loss (Search-R1). False is the ablation ``--no-mask``."""
    reward_model: Optional[str] = None
    """Older spelling of ``reward.rm: {model: PATH}``: a trained reward model whose normalised score
    is added to the verifiers' reward (logged as ``reward/model:rm``)."""
    reward_model_weight: float = 1.0
    """Weight of ``rl.reward_model``'s score in the total reward."""
    kl_target: Optional[float] = None
    """Adaptive KL coefficient (Ziegler et al. 2019): the KL per token to steer towards; None keeps
    ``kl_coef`` fixed."""
    kl_horizon: int = 10000
    """Adaptive KL horizon, in trajectories."""
    loss_max_len: int = 0
    """Constant token budget of ``seq-mean-token-sum-norm`` (Dr. GRPO); 0 = rollout.max_new_tokens ×
    rollout.max_turns."""
    baseline: Literal["batch-mean", "moving-average"] = "batch-mean"
    """REINFORCE baseline: batch-mean | moving-average."""
    baseline_decay: float = 0.9
    """Decay of the moving-average baseline."""
    gamma: float = 1.0
    """PPO discount per sampled token (1 is the usual LLM setting)."""
    lam: float = 0.95
    """PPO GAE λ."""
    vf_coef: float = 0.5
    """PPO value-loss weight (critic loss = vf_coef × value loss)."""
    value_clip: float = 0.2
    """PPO value clipping range (0 = unclipped value loss)."""
    critic: Literal["separate", "shared"] = "separate"
    """PPO critic: separate (a copy of the initial policy with a value head, own optimizer) | shared
    (a value head on the policy's own body; one optimizer, policy + vf_coef × value loss)."""
    critic_lr: float = 0.0
    """Critic learning rate (0 = optim.lr)."""
    whiten_rewards: bool = False
    """PPO: whiten the per-token rewards over the batch before GAE."""
    whiten_advantages: bool = True
    """PPO: whiten advantages over the batch's trained tokens."""
    no_eos_penalty: float = 0.0
    """Subtracted from the reward of a trajectory that ended without EOS or an environment's done
    (truncated), e.g. 1.0 (every on-policy algorithm)."""
    overlong_buffer_len: int = 0
    """DAPO's overlong reward shaping: the last this many tokens of the sampled-token budget
    (rollout.max_new_tokens × rollout.max_turns) cost up to ``overlong_penalty``, linearly; 0 = off."""
    overlong_penalty: float = 1.0
    """The penalty at the very end of the budget (DAPO: 1)."""
    resample_max_attempts: int = 0
    """Dynamic sampling (with ``filter_zero_variance``): extra rollout batches drawn at most, per
    step, to fill ``prompts_per_step`` groups with non-zero reward variance (DAPO); 0 = only drop."""
    old_logprobs: Literal["engine", "recompute"] = "engine"
    """The π_old of the ratio: the behaviour logprobs the engine recorded (engine), or one no-grad
    forward of the trainer before the update (recompute; needed for ``is_correction``)."""
    is_correction: Literal["none", "tis", "mis"] = "none"
    """Train/inference mismatch correction by the importance weight π_trainer_old / π_engine:
    tis = truncated at ``is_cap``; mis = masked (weight 0) above ``is_cap`` (Yao et al. 2025)."""
    is_cap: float = 2.0
    """Cap of the train/inference importance weight."""
    is_level: Literal["token", "sequence"] = "token"
    """token: one weight per token; sequence: the product over a trajectory's trained tokens."""


@dataclass
class PrefConfig:
    """Knobs of the preference learners (reward model, DPO and variants) and SFT."""

    beta: float = 0.1
    """DPO/IPO β (inverse temperature of the implicit reward)."""
    loss: Literal["sigmoid", "cdpo", "ipo", "simpo"] = "sigmoid"
    """sigmoid (DPO) | cdpo (conservative DPO) | ipo | simpo."""
    label_smoothing: float = 0.0
    """Conservative DPO ε: the probability a label is flipped (pref.loss = cdpo)."""
    epochs: int = 1
    """Passes over the preference or SFT data."""
    batch_size: int = 8
    """Pairs (or SFT rows) per optimizer step."""
    simpo_gamma: float = 0.5
    """SimPO target reward margin γ (in units of the β-scaled, length-normalised log-likelihood)."""
    max_length: int = 512
    """Longest prompt + response in tokens; longer pairs keep the prompt's end and the response's
    start."""
    precompute_ref_logprobs: bool = True
    """DPO: score the whole dataset under the frozen reference once before training and free the
    reference model (False keeps it and scores each batch)."""
    reference_model: Optional[str] = None
    """DPO reference weights (e.g. the SFT model); None = the initial policy."""
    eval_fraction: float = 0.1
    """Share of the training rows held out for evaluation when ``data.eval`` is unset."""


@dataclass
class RunConfig:
    output_dir: str = "runs/latest"
    """Run directory: config.yaml, metrics.jsonl, checkpoints/, report.json, plots."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    steps: int = 20
    """Rollout batches (RL) or optimizer steps (offline modes)."""
    eval_every: int = 0
    """Evaluate on ``data.eval`` every this many steps (0 = only at the end)."""
    save_every: int = 0
    """Checkpoint every this many steps (0 = only at the end)."""
    keep_checkpoints: int = 2
    """After each save, delete all but the newest this many ``checkpoints/step_*`` (0 = keep all).
    The checkpoint just written and ``final/`` are never deleted. A float32 checkpoint with AdamW
    state takes about 16 bytes per parameter (1.6 GB for a 135M model)."""
    resume: bool = False
    """Continue from the newest checkpoint in ``output_dir``."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto | cpu | cuda."""
    parallel: Literal["replicate", "fsdp"] = "replicate"
    """How ``torchrun`` ranks hold the policy. replicate: every rank keeps all the weights and the
    gradients are all-reduced. fsdp: the policy (and the reference model) are sharded with FSDP2
    ``fully_shard``, per decoder layer then the whole model; gradients are reduce-scattered as
    sums, the in-process HF engine generates with a gathered full copy, and checkpoints are
    written with torch.distributed.checkpoint. On-policy learners only, without LoRA, a critic,
    vLLM or rollout servers (refused by name; see docs/scale.md). One process trains the plain
    model (and resumes a sharded checkpoint)."""
    log_tensorboard: bool = False
    """Also write TensorBoard event files."""
    wandb_project: Optional[str] = None
    """Also log every step to this Weights & Biases project (None = off; needs the ``wandb``
    package, e.g. ``pip install 'rlvr[wandb]'``). The W&B run is named after ``output_dir``."""
    progress: bool = True
    """Show a progress bar."""
    log_rollouts_every: int = 1
    """Write the step's trajectories to ``rollouts/step_NNNNNN.jsonl.gz`` every this many RL steps
    (0 = never); ``rlvr view`` reads them. See :mod:`rlvr.rollout.log` for the record."""
    log_rollouts_max: int = 64
    """Trajectories written per logged step, drawn as whole groups with a seeded choice (at least
    one group); 0 = every trajectory of the step."""
    max_error_steps: int = 3
    """Stop an RL run after this many consecutive steps whose every reward was an error (a verifier
    past its deadline, a failed tool call or scoring), naming the most common reason (0 = never).
    See :mod:`rlvr.rollout.errors`."""


@dataclass
class TrainConfig:
    algorithm: str = "grpo"
    """A registered learner: grpo | dapo | gspo | cispo | rloo | reinforce | reinforce_pp | ppo |
    sft | rm | dpo (``rlvr list``)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    reward: Any = None
    """The reward in one place: verifier name → weight beside reward models, e.g.
    ``{qa_em: 1.0, rm: {model: runs/rm_tiny/final, weight: 0.5}}``, or ``model PATH`` for one reward
    model (see :mod:`rlvr.rewards.spec`). Merges with ``env.verifiers`` and ``rl.reward_model``; None =
    the environment's verifiers."""
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    pref: PrefConfig = field(default_factory=PrefConfig)
    run: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "TrainConfig":
        """Check derived values; raise with a message that names the field."""
        if self.rollout.samples_per_prompt < 1:
            raise ValueError("rollout.samples_per_prompt must be >= 1")
        batch = self.rl.prompts_per_step * self.rollout.samples_per_prompt
        if batch % self.rl.mini_batches_per_epoch:
            raise ValueError(
                f"rl.prompts_per_step × rollout.samples_per_prompt = {batch} trajectories do not "
                f"split into rl.mini_batches_per_epoch = {self.rl.mini_batches_per_epoch} equal parts")
        if self.rollout.max_new_tokens >= self.rollout.max_total_tokens:
            raise ValueError("rollout.max_new_tokens must be below rollout.max_total_tokens")
        if self.rollout.max_batch_size < 0:
            raise ValueError(f"rollout.max_batch_size must be >= 0 (0 = the whole batch), "
                             f"got {self.rollout.max_batch_size}")

        parse_reward_spec(self)  # shapes and duplicates now; names and paths at setup
        learner = ALGORITHMS.get(self.algorithm)  # an unknown name fails here, listing the known
        check = getattr(learner, "check_settings", None)  # on-policy algorithms declare their settings
        if check is not None:
            check(self)  # a setting it cannot honour is refused before any load
        elif changed := [f.name for f in fields(RLConfig) if getattr(self.rl, f.name) != getattr(_RL_DEFAULTS, f.name)]:
            k = changed[0]  # an offline learner (sft, rm, dpo) reads no rl.* setting
            raise ValueError(f"rl.{k} = {getattr(self.rl, k)!r} does not apply to {self.algorithm}: "
                             f"rl.* settings are read by the on-policy algorithms only (rlvr list)")
        return self


_RL_DEFAULTS = RLConfig()  # what an offline learner's rl.* settings must still be


def _parse_cli_overrides(args: list[str]) -> list[str]:
    """``["--a.b", "1", "--c=2", "--flag"]`` → OmegaConf dotlist ``["a.b=1", "c=2", "flag=true"]``."""
    out, i = [], 0
    while i < len(args):
        a = args[i]
        if not a.startswith("--"):
            raise ValueError(f"expected --key value, got {a!r}")
        key = a[2:]
        if "=" in key:
            out.append(key)
            i += 1
        elif i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{key}={args[i + 1]}")
            i += 2
        else:
            out.append(f"{key}=true")
            i += 1
    return out


def resolve_config_path(name: str) -> Path:
    """A config path, or the name of a bundled config (``rlvr list`` shows them)."""
    p = Path(name)
    if p.exists():
        return p
    bundled = BUNDLED_CONFIGS / (name if name.endswith(".yaml") else f"{name}.yaml")
    if bundled.exists():
        return bundled
    known = ", ".join(sorted(x.stem for x in BUNDLED_CONFIGS.glob("*.yaml"))) or "(none)"
    raise FileNotFoundError(f"config {name!r} is neither a file nor a bundled config; bundled: {known}")


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                schema: type = TrainConfig) -> Any:
    """Defaults ← YAML file (nested or dotted keys) ← ``--key value`` overrides, type-checked.

    Each error names where the bad setting came from: a YAML syntax error or a bad key or value in
    the file gives ``FILE:LINE``; a bad override gives the flag as typed, ``--rollout.samples_per_promt
    is not a setting; did you mean rollout.samples_per_prompt?``."""
    cfg = OmegaConf.structured(schema)
    if path is not None:
        p = resolve_config_path(str(path))
        text = p.read_text(encoding="utf-8")
        try:
            raw = yaml.safe_load(text) or {}
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            what = getattr(e, "problem", None) or str(e).splitlines()[0]
            where = f"{p}:{mark.line + 1}" if mark else str(p)
            at = f" at column {mark.column + 1}" if mark else ""
            raise ValueError(f"{where}: not valid YAML ({what}{at})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{p}: expected a mapping of settings, got {type(raw).__name__}")
        try:
            nested = OmegaConf.create({})
            for key, value in raw.items():
                OmegaConf.update(nested, str(key), value, force_add=True)
            cfg = OmegaConf.merge(cfg, nested)
            if isinstance(OmegaConf.select(cfg, "reward", default=None), str):
                cfg.reward = reward_as_mapping(cfg.reward)
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or ""
            line = _yaml_key_lines(text).get(key)
            raise ValueError(f"{p}{f':{line}' if line else ''}: "
                             + _setting_error(e, repr(key), schema)) from None
    if overrides:
        dotlist = _parse_cli_overrides(overrides)
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(dotlist))
        except OmegaConfBaseException as e:
            key = getattr(e, "full_key", None) or ""
            given = next((d.partition("=")[2] for d in dotlist if d.partition("=")[0] == key), None)
            flag = f"--{key}" + (f" {given}" if given is not None else "")
            raise ValueError("command line: " + _setting_error(e, flag if key else "", schema,
                                                               key_only=f"--{key}")) from None
    obj = OmegaConf.to_object(cfg)
    return obj.validate() if hasattr(obj, "validate") else obj


def _setting_error(e: OmegaConfBaseException, shown: str, schema: type, key_only: str = "") -> str:
    """One line on a rejected setting: an unknown key with the closest known one, or why a value
    does not fit its field's type."""
    import difflib

    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    key = getattr(e, "full_key", None) or ""
    msg = str(e).splitlines()[0]
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and key:
        known = _setting_names(OmegaConf.structured(schema))
        close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
        hint = (f"did you mean {close[0]}?" if close else
                "`rlvr train --print-config` lists the settings")
        return f"{key_only or shown} is not a setting; {hint}"
    return f"bad setting {shown}: {msg}" if shown else f"bad setting: {msg}"


def _setting_names(node: Any, prefix: str = "") -> list[str]:
    """Every dotted setting name of a structured config (sections and their fields)."""
    from omegaconf import DictConfig

    out = []
    for key in node.keys():
        name = f"{prefix}{key}"
        out.append(name)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and OmegaConf.get_type(child) not in (dict, None):
            out += _setting_names(child, f"{name}.")
    return out


def _yaml_key_lines(text: str) -> dict[str, int]:
    """Dotted key → the 1-based line it is written on, for every key of a YAML mapping."""
    lines: dict[str, int] = {}

    def walk(node, prefix: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{prefix}{k.value}"
                lines[name] = k.start_mark.line + 1
                walk(v, f"{name}.")

    try:
        walk(yaml.compose(text), "")
    except yaml.YAMLError:
        pass
    return lines


def dump_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(OmegaConf.to_yaml(OmegaConf.structured(cfg)))
