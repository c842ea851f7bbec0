"""`load_backend(card, device)`: the one way the rest of sdaas loads a registered model.

It knows the interface (`backend.py`) and the implementations (`diffusers_backend.py`)
and picks the implementation for a card; the interface knows no implementation.
"""

from __future__ import annotations

import torch

from models.backend import ModelBackend, check_device, cpu_threads
from models.card import ModelCard
from models.diffusers_backend import DiffusersBackend


def load_backend(card: ModelCard, device: str = "cpu") -> ModelBackend:
    """Load the model a card describes onto `device` ('cpu', 'cuda', 'cuda:1', ...)."""
    device = check_device(device)
    if device == "cpu":  # the threads it is profiled and served at (`cpu_threads`)
        torch.set_num_threads(cpu_threads())
    return DiffusersBackend.from_card(card, device)
