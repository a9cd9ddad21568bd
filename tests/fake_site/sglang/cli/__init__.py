"""TEST DOUBLE (fake sglang.cli)."""
