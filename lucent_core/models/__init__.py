"""Models and their configuration (preprocessing, input size)."""

from lucent_core.models.config import Preprocessing, preprocessing_of

__all__ = ["Preprocessing", "preprocessing_of"]
