"""TEST DOUBLE: ``python -m sglang.launch_server ...`` runs the fake server (see ``_fake.py``)."""

import sys
import warnings

if __name__ == "__main__":
    # The real entry point prints this UserWarning too (launch_server.py:71-77).
    warnings.warn(
        "'python -m sglang.launch_server' is still supported, but "
        "'sglang serve' is the recommended entrypoint.\n"
        "  Example: sglang serve --model-path <model> [options]",
        UserWarning,
        stacklevel=1,
    )
    from sglang._fake import run

    run(sys.argv[1:])
