"""gapmodel: Bayesian estimates of missing diagnoses with honest uncertainty."""

__version__ = "0.1.0"
