"""The W&B server this project talks to: which one, whether a login for it exists, whether it answers.

wandb's own client retries an unreachable server for minutes inside its service process, and a
command that gave up waiting can then hang at exit while that process finishes. So whatever
reaches the server first asks it once itself with :func:`check_server`: ``hat.report --wandb``
and ``hat.dashboard`` then fail at once, in one line, and an online training goes offline at once.
"""

from __future__ import annotations

import netrc
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_BASE_URL = "https://api.wandb.ai"


def base_url(environ: Mapping[str, str]) -> str:
    """The server ``environ`` points W&B at: ``WANDB_BASE_URL``, else W&B's public server."""
    return environ.get("WANDB_BASE_URL") or DEFAULT_BASE_URL


def has_login(environ: Mapping[str, str]) -> bool:
    """Whether W&B would find credentials without asking: the environment or a netrc entry for
    the server of :func:`base_url`."""
    if environ.get("WANDB_API_KEY") or environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(base_url(environ)).hostname
    path = Path(environ.get("NETRC") or Path.home() / ".netrc")
    try:
        return host is not None and netrc.netrc(path).authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def check_server(url: str, timeout: float = 5.0) -> None:
    """Raise ``ConnectionError`` naming ``url`` when no HTTP server answers there within
    ``timeout`` seconds. Any HTTP answer counts, an error status included."""
    try:
        urllib.request.urlopen(url, timeout=timeout).close()
    except urllib.error.HTTPError:
        return
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ConnectionError(
            f"no answer from the W&B server {url} ({reason}); "
            "set WANDB_BASE_URL or run `wandb login --host URL` for another server"
        ) from None
