"""Two torchrun *nodes* (``--nnodes 2``, one rank each, static rendezvous at a master address, as
on two machines) train like two ranks of one node and like one process on the same global batch."""

import os
import subprocess
import sys
from pathlib import Path

from conftest import assert_ranks_match

WORKER = Path(__file__).parent / "helpers" / "dist_worker.py"
ENV = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def test_two_nodes_give_the_single_process_gradient(tmp_path):
    single, nodes = tmp_path / "single", tmp_path / "nodes"
    res = subprocess.run([sys.executable, str(WORKER), str(single), "grpo"], env=ENV,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    port = str(29000 + os.getpid() % 400)
    agents = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes", "2",
                                "--nproc_per_node", "1", "--node_rank", str(node),
                                "--master_addr", "127.0.0.1", "--master_port", port,
                                str(WORKER), str(nodes), "grpo"],
                               env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for node in (0, 1)]
    outs = [a.communicate(timeout=600) for a in agents]
    for a, (_, err) in zip(agents, outs):
        assert a.returncode == 0, err[-3000:]
    assert_ranks_match(single, nodes)  # ranks 0 and 1: the global ranks of the nodes' processes
