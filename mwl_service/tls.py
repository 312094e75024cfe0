"""The server side of DICOM over TLS: the SSL context mwl-service listens with."""

from __future__ import annotations

import ssl

from mwl_service.settings import ServerConfig


def make_ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """Server-side TLS context (TLS 1.2 or newer), or None without --tls-cert.

    With a CA file, client certificates are required and verified against it.
    """
    if not config.tls_cert:
        if config.tls_key or config.tls_ca:
            raise ValueError("--tls-key/--tls-ca need --tls-cert")
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=config.tls_cert, keyfile=config.tls_key or None)
    if config.tls_ca:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=config.tls_ca)
    return context
