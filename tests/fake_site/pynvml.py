"""TEST DOUBLE: a fake ``pynvml`` for a spawned ``qembed serve``.

It replaces itself in ``sys.modules`` with ``tests.fake_nvml.make(scenario)``, the scenario
being ``$QEMBED_FAKE_NVML`` (default ``a100``). Needs the repo root on ``PYTHONPATH``.
"""

import os
import sys

from tests.fake_nvml import make

sys.modules[__name__] = make(os.environ.get("QEMBED_FAKE_NVML", "a100"))
