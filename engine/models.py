"""The models a serving runtime has loaded: one backend per (model, device), plus the
CLIP scorer. Loaded on first use and kept until released, so the first jobs never pay a
load and a residency bound knows each model's load time."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from models.accelerators import Accelerator
from models.card import ModelCard

log = logging.getLogger(__name__)


class ServingModels:
    """Backends loaded on first use and kept until released: one per (model, device),
    plus the scorer. `load_s`: seconds of each model's first load (the core charges it
    when a residency bound makes a device load a model)."""

    def __init__(self, cards: dict[str, ModelCard], clip_path: str | None):
        from models.backend import quiet_model_libraries

        quiet_model_libraries()
        self.cards = cards
        self.clip_path = clip_path
        self.backends: dict[tuple[str, str], Any] = {}
        self.scorers: dict[str, Any] = {}
        self.load_s: dict[str, float] = {}
        self._lock = threading.Lock()

    def backend(self, model_key: str, device: str):
        key = (model_key, device)
        with self._lock:
            if key not in self.backends:
                from models.loader import load_backend  # torch & co.: only when serving

                t0 = time.perf_counter()
                self.backends[key] = load_backend(self.cards[model_key], device)
                self.load_s.setdefault(model_key, time.perf_counter() - t0)
                log.info("loaded %s on %s", model_key, device)
            return self.backends[key]

    def release(self, model_key: str, device: str) -> None:
        with self._lock:
            self.backends.pop((model_key, device), None)

    def preload(self, devices: tuple[Accelerator, ...], keep: bool = True) -> None:
        """Every registered model on every serving device (timed), and the scorer: the
        first jobs must not pay model loads. keep=False (a residency bound): each is
        loaded once for its load time, then released; devices load them as needed."""
        for device in dict.fromkeys(d.device for d in devices):
            for key in self.cards:
                self.backend(key, device)
                if not keep:
                    self.release(key, device)
            self.scorer(device)

    def scorer(self, device: str):
        if not self.clip_path:
            return None
        with self._lock:
            if device not in self.scorers:
                from models.clip_score import ClipScorer  # transformers: only when scoring

                self.scorers[device] = ClipScorer.from_path(self.clip_path, device)
            return self.scorers[device]
