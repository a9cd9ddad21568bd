"""TEST DOUBLE: the behaviour of a launching SGLang 0.5.23 embedding server, without a GPU.

It follows ``../shared/reference/sglang-0.5.23.md`` (sections 2.1-2.3, 6, "Traps"): log lines in
SGLang's format on stderr, nothing listening on the port while the "model loads", then the
stand-in HTTP server from ``tests/standin/server.py`` with ``/health`` 503 before 200, and the
documented ways to die. One child process stands for ``sglang::scheduler`` (setproctitle is not
available, so it is a python process with that argument); it ignores SIGTERM and has NO
parent-death signal, so only a SIGKILL to the process group removes it (stricter than SGLang,
whose children have PDEATHSIG).

Environment:
    FAKE_SGLANG_MODE       ok (default) | hang | oom | no-kv | not-enough-memory | host-oom |
                           bad-model | port-busy | proxy-warmup | not-embedding |
                           drain-forever | crash-after-ready (dies after the first embedding) |
                           port-stolen (waits, while "loading", until another process listens
                           on its port, keeps loading, then fails to bind as uvicorn does and
                           lingers FAKE_SGLANG_BUSY_LINGER s before SIGKILLing itself)
    FAKE_SGLANG_LOAD_DELAY seconds between "Load weight begin" and "end" (default 1.0)
    FAKE_SGLANG_HEALTH_503 how many /health polls answer 503 first (default 2)
    FAKE_SGLANG_HEALTH_DELAY seconds a 200 /health takes (default 0.2; SGLang: at least 1 s)
    FAKE_SGLANG_DRAIN      seconds the SIGTERM drain takes (default 0.3)
    FAKE_SGLANG_BUSY_LINGER seconds between the Errno 98 line and the self-SIGKILL (default 0.5;
                           SGLang's warm-up thread polls the busy port for 2-12 minutes)
    FAKE_SGLANG_PIDFILE    JSON file written at start: {"main", "children", "env", "argv"}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

MODE = os.environ.get("FAKE_SGLANG_MODE", "ok")
_SCHEDULER_CODE = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True:\n"
    "    time.sleep(3600)\n"
)


def log(msg: str) -> None:
    """SGLang's logging format: ``[%(asctime)s] msg`` on stderr (common.py:2323), through the
    ``logging`` module as SGLang does, so a log-record factory installed before SGLang starts
    (qembed's keyed entry, issue 20) sees every line."""
    import logging

    logger = logging.getLogger("sglang.fake")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("[%(asctime)s] %(message)s", "%Y-%m-%d %H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    logger.info("%s", msg)


def raw(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def die_by_sigkill() -> None:
    """SGLang's ``kill_process_tree(os.getpid())``: the main process SIGKILLs itself (rc -9).
    The fake leaves its scheduler child behind on purpose."""
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)


def sleep(seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.05))


OOM = [
    "Scheduler hit an exception: Traceback (most recent call last):",
    '  File "/sgl-workspace/sglang/python/sglang/srt/managers/scheduler.py", line 6360, in run_scheduler_process',
    "    scheduler = Scheduler(server_args, port_args, gpu_id, tp_rank, moe_ep_rank, pp_rank, dp_rank)",
    "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 79.25 GiB of which 1.06 GiB is free.",
    "",
    "Received sigquit from a child process. It usually means the child failed.",
]
NO_KV = [
    "Scheduler hit an exception: Traceback (most recent call last):",
    "ValueError: Loaded weights leave no GPU memory for the KV cache under --mem-fraction-static=0.1. Raise --mem-fraction-static above 0.2 (minimum viable = 0.18).",
    "Received sigquit from a child process. It usually means the child failed.",
]
NOT_ENOUGH = [
    "Scheduler hit an exception: Traceback (most recent call last):",
    "RuntimeError: Not enough memory. Please try to increase --mem-fraction-static. Current value: mem_fraction_static=0.5",
    "Received sigquit from a child process. It usually means the child failed.",
]
HOST_OOM = [
    "Traceback (most recent call last):",
    "RuntimeError: Rank 0 scheduler died during initialization (exit code: -9). If exit code is -9 (SIGKILL), a common cause is the OS OOM killer. Run dmesg -T | grep -i oom to check.",
]
PROXY = [
    "Initialization failed. warmup error: Traceback (most recent call last):",
    "AssertionError: res=<Response [502]>, res.text=''",
]


def bad_model_lines(model: str) -> list[str]:
    return [
        "Traceback (most recent call last):",
        f"ValueError: Unrecognized model in {model}. Should have a `model_type` key in its config.json, or contain one of the following strings in its name: albert, bert, qwen3",
    ]


def _listening(host: str, port: int) -> bool:
    import socket

    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def write_pidfile(children: list[int], argv: list[str]) -> None:
    path = os.environ.get("FAKE_SGLANG_PIDFILE")
    if not path:
        return
    env = {k: os.environ.get(k) for k in ("NO_PROXY", "no_proxy", "CUDA_VISIBLE_DEVICES")}
    tmp = path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump({"main": os.getpid(), "children": children, "env": env, "argv": argv}, fh)
    os.replace(tmp, path)


def run(argv: list[str]) -> None:
    from sglang.srt.server_args import prepare_server_args

    args = prepare_server_args(argv)
    load_delay = float(os.environ.get("FAKE_SGLANG_LOAD_DELAY", "1.0"))
    drain = float(os.environ.get("FAKE_SGLANG_DRAIN", "0.3"))
    health_503 = int(os.environ.get("FAKE_SGLANG_HEALTH_503", "2"))
    # A healthy /health runs a 1-token forward after asyncio.sleep(1) in SGLang; shorter here.
    health_delay = float(os.environ.get("FAKE_SGLANG_HEALTH_DELAY", "0.2"))

    # Like engine.py: the resolved args, API key included (SGLang only redacts watermark keys).
    log(f"server_args={vars(args)!r}")
    if MODE == "bad-model":  # argument resolution fails in the main process, no child yet
        write_pidfile([], argv)
        for line in bad_model_lines(args.model_path):
            raw(line)
        raise SystemExit(1)

    scheduler = subprocess.Popen(
        [sys.executable, "-c", _SCHEDULER_CODE, "sglang::scheduler"],
        stdin=subprocess.DEVNULL,
    )
    write_pidfile([scheduler.pid], argv)
    log("Load weight begin. avail mem=78.50 GB")
    if MODE == "hang":
        while True:
            time.sleep(3600)
    if MODE == "port-stolen":  # someone takes the port while the model loads
        deadline = time.monotonic() + 60
        while not _listening(args.host, args.port) and time.monotonic() < deadline:
            sleep(0.05)
    sleep(load_delay)
    if MODE in ("oom", "no-kv", "not-enough-memory"):
        for line in {"oom": OOM, "no-kv": NO_KV, "not-enough-memory": NOT_ENOUGH}[MODE]:
            log(line) if line.startswith(("Scheduler", "Received")) else raw(line)
        die_by_sigkill()
    if MODE == "host-oom":
        for line in HOST_OOM:
            raw(line)
        raise SystemExit(1)
    log("Load weight end. elapsed=1.00 s, type=Qwen3ForCausalLM, avail mem=70.80 GB, mem usage=7.70 GB.")
    log("Memory pool end. avail mem=8.12 GB")
    log("Capture target prefill CUDA graph begin. backend=breakable, num_tokens=[8192], avail mem=8.10 GB")
    log("Capture target prefill CUDA graph end. elapsed=0.10 s, mem usage=0.50 GB, avail mem=7.60 GB.")
    ctx = int(args.context_length) if args.context_length else 32768
    log(f"max_total_num_tokens=500000, chunked_prefill_size=8192, max_prefill_tokens=16384, max_running_requests=2048, context_len={ctx}, available_gpu_mem=7.60 GB")

    from tests.standin.server import StandinConfig, build_server

    matryoshka = "is_matryoshka" in (args.json_model_override_args or "")
    config = StandinConfig(
        model=args.model_path,
        served_model_name=args.served_model_name,
        context_length=ctx,
        matryoshka=matryoshka,
        health_503_count=health_503,
        health_delay=health_delay,
        api_key=args.api_key,
        is_embedding=args.is_embedding and MODE != "not-embedding",
    )
    raw(f"INFO:     Started server process [{os.getpid()}]")
    raw("INFO:     Waiting for application startup.")
    raw("INFO:     Application startup complete.")
    try:
        if MODE == "port-busy":  # as if something grabbed the port during the load
            raise OSError(98, "address already in use")
        server = build_server(config, host=args.host, port=args.port)
    except OSError as exc:
        if exc.errno != 98:
            raise
        raw(f"ERROR:    [Errno 98] error while attempting to bind on address ('{args.host}', {args.port}): address already in use")
        raw("INFO:     Waiting for application shutdown.")
        # SGLang's warm-up thread polls the busy port (another server's!) for minutes first
        sleep(float(os.environ.get("FAKE_SGLANG_BUSY_LINGER", "0.5")))
        die_by_sigkill()
    raw(f"INFO:     Uvicorn running on http://{args.host}:{args.port} (Press CTRL+C to quit)")

    stop = threading.Event()

    def on_sigterm(signum: int, frame: object) -> None:
        # The real handler is called without arguments (tokenizer_manager.py:4066-4070).
        log("SIGTERM received. signum=None frame=None. Draining requests and shutting down...")
        stop.set()

    signal.signal(signal.SIGTERM, on_sigterm)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()

    if MODE == "proxy-warmup":
        sleep(0.2)
        for line in PROXY:
            log(line) if line.startswith("Initialization") else raw(line)
        die_by_sigkill()
    sleep(0.1)
    log("The server is fired up and ready to roll!")

    if MODE == "crash-after-ready":  # dies FAKE_SGLANG_CRASH_AFTER s after the first embedding
        while server.state.embedding_requests == 0 and not stop.wait(0.02):
            pass
        stop.wait(float(os.environ.get("FAKE_SGLANG_CRASH_AFTER", "1.0")))
        if not stop.is_set():
            for line in OOM:
                log(line) if line.startswith(("Scheduler", "Received")) else raw(line)
            die_by_sigkill()

    while not stop.wait(0.1):
        pass
    if MODE == "drain-forever":  # a request that never finishes: no upper bound on the drain
        while True:
            log("Gracefully exiting... Remaining number of requests 1.")
            sleep(5)
    sleep(drain)
    server.state.stopping.set()
    server.shutdown()
    server.server_close()
    # kill_process_tree(children): SGLang SIGKILLs its children at the end of a clean drain.
    scheduler.kill()
    scheduler.wait()
    raise SystemExit(0)
