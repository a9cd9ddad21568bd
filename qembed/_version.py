"""The one version string (the root package, the client's User-Agent, `qembed --version`, doctor)."""

__version__ = "0.1.0"
