"""``rlvr rollout-server``: an engine (HF or vLLM) serving token-id rollouts over HTTP
(protocol in :mod:`rlvr.engines.server`); trainers reach it through ``rollout.servers``."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("rollout-server", help="serve rollouts from an HF or vLLM engine over HTTP")
    p.add_argument("--engine", choices=("hf", "vllm"), default="hf", help="hf | vllm")
    p.add_argument("--model", required=True,
                   help="weights to start from: a local directory or hub id (as model.name_or_path)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind; loopback by default (the server has no auth)")
    p.add_argument("--port", type=int, default=8100)
    p.add_argument("--device", default="auto", help="hf engine: auto | cpu | cuda[:N]")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"),
                   help="weights' precision (vllm: float32 means the checkpoint's own)")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9,
                   help="vllm: fraction of the GPU vLLM may take (it has the GPU to itself)")
    p.add_argument("--max-model-len", type=int, default=0, help="vllm: context length (0 = the model's)")
    p.add_argument("--log-level", default="info", help="uvicorn log level")
    p.add_argument("--debug", action="store_true", help="full tracebacks")
    p.set_defaults(func=run)


def run(args) -> int:
    from rlvr.engines.server import RolloutService, build_engine, serve

    vllm = {}
    if args.engine == "vllm":
        vllm = {"gpu_memory_utilization": args.gpu_memory_utilization,
                "max_model_len": args.max_model_len or None}
    engine = build_engine(args.engine, args.model, device=args.device, dtype=args.dtype, **vllm)
    service = RolloutService(engine, args.engine, args.model)
    print(f"serving {args.engine} rollouts of {args.model} on http://{args.host}:{args.port} "
          f"(POST /generate, POST /load_weights, GET /health)", flush=True)
    serve(service, host=args.host, port=args.port, log_level=args.log_level)
    return 0
