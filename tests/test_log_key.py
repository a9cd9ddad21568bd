"""Issue 20: SGLang 0.5.23 logs `server_args={...}` with `'api_key': '<key>'` in clear.

The design (docs/deploy.md, "Keys and logs"): containers start SGLang through the keyed entry
(:func:`qembed.serving.sglang_args.keyed_entry_args`), which reads the key from the environment in memory
and redacts every log record of SGLang's main process. Checked here in the real SGLang
interpreter, with SGLang's own argument parser, logger set-up and `server_args=` formatter (no
engine is started: the line is logged before any model loads).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from qembed.serving.sglang_args import ENTRY_CODE, keyed_entry_args

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "tests" / "logs" / "real" / "kv_pool_small.log"

# engine.py (0.5.23), `_launch_subprocesses`: configure_logger(server_args), then
# logger.info(f"server_args={_server_args_for_logging(server_args)}")
REAL_LINE = """
from sglang.srt.entrypoints import engine
from sglang.srt.server_args import prepare_server_args
from sglang.srt.utils.common import configure_logger
sa = prepare_server_args(sys.argv[1:])
configure_logger(sa)
line = f"server_args={engine._server_args_for_logging(sa)}"
print("key-in-line" if sa.api_key and sa.api_key in line else "no-key-in-line")
engine.logger.info(line)
"""


def test_the_real_server_args_line_never_shows_the_key(sglang_python: Path) -> None:
    key = "sk-issue20-d41d8cd98f00b204"
    var = "QEMBED_API_KEY"
    code = keyed_entry_args(var)[1]
    assert code.endswith(ENTRY_CODE)  # the entry the containers run, with SGLang's start swapped
    code = code.removesuffix(ENTRY_CODE) + REAL_LINE
    r = subprocess.run([str(sglang_python), "-c", code, "--model-path", "/nonexistent/model", "--device", "cpu"],
                       capture_output=True, text=True, timeout=240, env={"PATH": "/usr/bin:/bin", var: key,
                                                                         "SGLANG_USE_CPU_ENGINE": "1"})
    assert r.returncode == 0, r.stderr[-3000:]
    # SGLang received the key (from the environment, in memory) and its line really holds it ...
    assert r.stdout.strip().splitlines()[-1] == "key-in-line"
    # ... but what reaches the log has it redacted
    (logged,) = [ln for ln in r.stderr.splitlines() if "server_args={" in ln]
    assert key not in r.stderr and key not in r.stdout
    assert "'api_key': '[...]'" in logged
    # the same line SGLang wrote in a recorded real run (there with no key)
    recorded = next(ln for ln in RECORDED.read_text().splitlines() if "server_args={" in ln)
    assert recorded.split("server_args=")[1].startswith("{'model_path': ")
    assert logged.split("server_args=")[1].startswith("{'model_path': ") and "'api_key': None" in recorded
