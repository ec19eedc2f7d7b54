"""Whether the Hugging Face hub can be reached, decided once and fast.

Offline, timm and transformers retry their downloads for a minute or more before failing. The
encoders ask :func:`hub_offline_reason` first and, when the hub is out of reach, look only in the
local cache, so that missing weights stop a run within seconds with a message that says what was
tried and how to provide the files.
"""

from __future__ import annotations

import functools
import os
from urllib.parse import urlparse

from huggingface_hub import constants, get_session

OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
PROBE_TIMEOUT_S = 3.0


@functools.cache
def hub_offline_reason() -> str | None:
    """``None`` when the hub answers; otherwise why it is treated as offline (an env var, or the failed probe).

    The probe is one short request to ``HF_ENDPOINT`` through huggingface_hub's own HTTP session, so
    it takes the way the downloads would take (``HTTPS_PROXY``/``HTTP_PROXY`` included); a gateway
    error (HTTP 5xx) counts as no answer. huggingface_hub's offline mode is honoured too.
    """
    for variable in OFFLINE_VARIABLES:
        if os.environ.get(variable, "").strip().lower() in ("1", "true", "yes", "on"):
            return f"{variable}={os.environ[variable]} is set"
    if _library_offline():
        return "huggingface_hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE was set at its import)"
    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    parts = urlparse(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        response = get_session().head(f"{endpoint}/", timeout=PROBE_TIMEOUT_S)
    except Exception as error:  # requests', httpx's or httpx2's errors, as the huggingface_hub version uses
        return f"{host}:{port} cannot be reached ({type(error).__name__}: {error})"
    if response.status_code >= 500:
        return f"{host}:{port} cannot be reached (HTTP {response.status_code} from {endpoint})"
    return None


def _library_offline() -> bool:
    """huggingface_hub's own offline switch: ``is_offline_mode()`` where it has one, else the constant."""
    is_offline_mode = getattr(constants, "is_offline_mode", None)
    return bool(is_offline_mode() if is_offline_mode is not None else constants.HF_HUB_OFFLINE)


def is_local(location: str) -> bool:
    """True for an existing file or directory (not a hub name)."""
    return os.path.exists(location)
