"""Test kit: clients that leave a websocket in every way a real peer can.

``python -m wsfinally.testing.rawclient URL SCENARIO`` runs the raw-socket client
(see :mod:`wsfinally.testing.rawclient`) in its own process, so that it can be
SIGKILLed, SIGSTOPped or made to reset its connection.
"""
