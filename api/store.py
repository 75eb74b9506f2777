"""Loaded versions, kept in a small LRU cache keyed by version id.

The registry verifies each version's content hashes when it loads it; a version is
immutable, so a cached view stays right until it is evicted. Only the active pointer
changes, and it is read from disk on each request (one small file).
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from typing import Any

from api.errors import ApiError
from gapmodel.posterior import PosteriorView
from gapmodel.registry import Registry, RegistryError

log = logging.getLogger("api.store")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,199}$")


def check_name(value: str, what: str) -> str:
    """Model names and version ids are plain file names: nothing else reaches the disk."""
    if not NAME.match(value) or ".." in value:
        raise ApiError(404, f"no {what} '{value[:100]}'")
    return value


class ModelStore:
    """The registry and an LRU cache of PosteriorViews."""

    def __init__(self, registry: Registry, size: int = 4):
        self.registry = registry
        self.size = size
        self._cache: OrderedDict[str, PosteriorView] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}

    def models(self) -> list[str]:
        return self.registry.models()

    def require_model(self, model: str) -> str:
        check_name(model, "model")
        if model not in self.models():
            raise ApiError(404, f"no model '{model}'; models: "
                           + (", ".join(self.models()) or "none"))
        return model

    def meta(self, version_id: str) -> dict[str, Any]:
        """A version's metadata (meta.json), without loading its draws."""
        import json

        check_name(version_id, "version")
        try:
            path = self.registry.find(version_id)
        except RegistryError:
            raise ApiError(404, f"no version '{version_id}'") from None
        meta = json.loads((path / "meta.json").read_text())
        meta["active"] = self.registry.active_id(meta["model"]) == version_id
        return meta

    def view(self, model: str, version: str | None = None) -> PosteriorView:
        """The view of `version` (default: the model's active version)."""
        self.require_model(model)
        if version is None:
            version = self.registry.active_id(model)
            if version is None:
                raise ApiError(409, f"model '{model}' has no active version; name one with "
                               "version=", code="no_active_version")
        check_name(version, "version")
        with self._lock:
            if version in self._cache:
                self._cache.move_to_end(version)
                return self._check_model(self._cache[version], model)
            loading = self._loading.setdefault(version, threading.Lock())
        with loading:  # one load per version at a time
            with self._lock:
                if version in self._cache:
                    return self._check_model(self._cache[version], model)
            try:
                loaded = self.registry.load(version)
            except RegistryError as exc:
                if "no version" in str(exc):
                    raise ApiError(404, f"no version '{version}'") from None
                raise ApiError(409, str(exc), code="corrupt_version") from None
            view = PosteriorView.from_version(loaded)
            log.info("loaded version %s of %s (%d cells, %d draws)", version,
                     loaded.meta["model"], len(view.cells), view.n_draws)
            with self._lock:
                self._cache[version] = view
                self._cache.move_to_end(version)
                while len(self._cache) > self.size:
                    evicted, _ = self._cache.popitem(last=False)
                    log.info("evicted version %s from the cache", evicted)
                self._loading.pop(version, None)
        return self._check_model(view, model)

    @staticmethod
    def _check_model(view: PosteriorView, model: str) -> PosteriorView:
        if view.meta.get("model") != model:
            raise ApiError(404, f"version {view.version} belongs to model "
                           f"'{view.meta.get('model')}', not '{model}'")
        return view

    def loaded(self) -> list[str]:
        with self._lock:
            return list(self._cache)

    def preload(self) -> list[str]:
        """Load every model's active version (errors are logged, not raised)."""
        done = []
        for model in self.models():
            if self.registry.active_id(model) is None:
                continue
            try:
                done.append(self.view(model).version)
            except ApiError as exc:
                log.error("cannot load the active version of %s: %s", model, exc.message)
        return done

    def active_loaded(self) -> list[str]:
        """Models whose active version is in memory."""
        loaded = set(self.loaded())
        return [m for m in self.models() if self.registry.active_id(m) in loaded]
