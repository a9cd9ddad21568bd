"""Helpers shared by several test modules, one module per concern.

A pytest module (``test_*.py``, ``conftest.py``) is not a library: a test module imports shared
code from here, never from another test module. Fixtures and hooks stay in ``conftest.py``.
"""
