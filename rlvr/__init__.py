"""rlvr: reinforcement learning of language models from verifiable rewards and agentic tool use.

    import rlvr

    @rlvr.verifier("yes")
    def yes(completion, answer, **info):
        \"\"\"Reward 1 when the completion says yes.\"\"\"
        ok = "yes" in completion.lower()
        return rlvr.Score(float(ok), ok)

Heavy optional dependencies (vllm, docker, faiss, sentence-transformers) are never imported here.
"""

from rlvr.core.environment import Environment, StepResult
from rlvr.core.registry import algorithm, environment, verifier
from rlvr.core.types import Score, Task, ToolCall, Trajectory, Turn

__version__ = "0.1.0"

__all__ = [
    "Environment", "Score", "StepResult", "Task", "ToolCall", "Trajectory", "Turn",
    "algorithm", "environment", "verifier", "__version__",
]
