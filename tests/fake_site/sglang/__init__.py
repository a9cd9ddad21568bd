"""TEST DOUBLE: a fake SGLang 0.5.23 for qembed's launcher tests (see tests/fake_site/README.md)."""

__version__ = "0.5.23"
