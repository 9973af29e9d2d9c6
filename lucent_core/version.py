"""The package's version, in one place (``lucent_core.__version__`` re-exports it)."""

__version__ = "0.1.0"
