from __future__ import annotations

from flask import Blueprint

from commander import pki
from commander.exceptions import NotFound
from commander.permissions import PUBLIC
from commander.routes import api_route, commander
from commander.schemas import CaOut

bp = Blueprint("pki", __name__)


@api_route(bp, "GET", "/ca", permission=PUBLIC, response=CaOut)
def ca():
    """The mesh CA, for a client to pin; needs no token, and is trusted only by its hash."""
    certificate = pki.ca_certificate(commander().settings)
    if certificate is None:
        raise NotFound("no_mesh_ca", "this Commander serves no mesh CA: plain HTTP, or its operator's own "
                                     "certificate, which clients verify with their system's trust store")
    return CaOut(certificate=pki.pem(certificate).decode(), ca_hash=pki.spki_hash(certificate))
