"""gapmodel: Bayesian estimates of missing diagnoses with honest uncertainty."""

from gapmodel.compile_cache import configure as _configure_compile_cache

__version__ = "0.1.0"

# before any module imports PyTensor, which reads its configuration once
_configure_compile_cache()
