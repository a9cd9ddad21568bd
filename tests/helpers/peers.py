"""The peer runtimes' lane (tests/peers): the reference a peer's vectors are compared with."""

from __future__ import annotations

from tests.numerics.st_reference import STReference
from tests.peers.peer import Peer


def st_for(peer: Peer) -> STReference:
    """sentence-transformers on the model directory the peer serves: the reference."""
    return STReference(peer.model_dir)
