"""The gapmodel HTTP service (FastAPI). Thin: it calls gapmodel, it does no statistics."""
