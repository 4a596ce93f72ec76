"""wsfinally: every accepted websocket connection ends exactly once, with a truthful reason.

Public API (stable): :func:`setup`, :func:`accept`, :func:`endpoint`, :class:`Connection`,
:class:`Ending`, :class:`EndReason`, :class:`Settings`, :data:`REGISTRY`.
"""

from .connection import Connection
from .ending import Ending, EndReason
from .endpoint import accept, endpoint
from .server import REGISTRY, Registry, setup
from .settings import Settings

__all__ = [
    "REGISTRY",
    "Connection",
    "EndReason",
    "Ending",
    "Registry",
    "Settings",
    "accept",
    "endpoint",
    "setup",
]

__version__ = "0.1.0"
