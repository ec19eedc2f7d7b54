"""Whether the Hugging Face hub can be reached, decided once and fast.

Offline, timm and transformers retry their downloads for a minute or more before failing. The
encoders ask :func:`hub_offline_reason` first and, when the hub is out of reach, look only in the
local cache, so that missing weights stop a run within seconds with a message that says what was
tried and how to provide the files.
"""

from __future__ import annotations

import functools
import os
import socket
from urllib.parse import urlparse

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0
DEFAULT_ENDPOINT = "https://huggingface.co"


@functools.cache
def hub_offline_reason() -> str | None:
    """``None`` when the hub answers; otherwise why it is treated as offline (an env var, or the failed probe)."""
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable}={os.environ[variable]} is set"
    endpoint = urlparse(os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT)
    host = endpoint.hostname or "huggingface.co"
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as error:
        return f"{host}:{port} cannot be reached ({error})"
    return None


def is_local(location: str) -> bool:
    """True for an existing file or directory (not a hub name)."""
    return os.path.exists(location)
