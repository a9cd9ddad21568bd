"""TEST DOUBLE (fake sglang.srt)."""
