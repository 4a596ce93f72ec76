"""wsfinally: every accepted websocket connection ends exactly once, with a truthful reason.

Public API (stable): :func:`setup`, :func:`accept`, :func:`endpoint`, :class:`Connection`,
:class:`Ending`, :class:`EndReason`, :class:`Settings`, :data:`REGISTRY`, :class:`Observer`;
:func:`setup_metrics` (Prometheus, docs/metrics.md).
"""

from .connection import Connection
from .ending import Ending, EndReason
from .endpoint import accept, endpoint
from .metrics import setup_metrics
from .server import REGISTRY, Observer, Registry, setup
from .settings import Settings

__all__ = [
    "REGISTRY",
    "Connection",
    "EndReason",
    "Ending",
    "Observer",
    "Registry",
    "Settings",
    "accept",
    "endpoint",
    "setup",
    "setup_metrics",
]

__version__ = "0.1.0"
