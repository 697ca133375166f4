"""The tracking image itself and the tag that embeds it."""

from __future__ import annotations

import html
import re
from urllib.parse import urlsplit

__all__ = ["GIF", "PIXEL_PATH_RE", "pixel_tag", "pixel_url"]

# The classic 43-byte 1x1 transparent GIF89a.
GIF = (
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff"
    b"!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
)
assert len(GIF) == 43

# Where a pixel URL's token sits: ``.../t/<token>.gif``.
PIXEL_PATH_RE = re.compile(r"/t/([A-Za-z0-9_-]{1,64})\.gif(?:[?#].*)?$")


def pixel_url(base_url: str, token: str) -> str:
    """The absolute URL of ``token``'s image; a relative one would not load in a mail
    client, so anything but an absolute http(s) base URL is refused."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the public base URL must be absolute http(s), not {base_url!r}")
    return f"{base_url.rstrip('/')}/t/{token}.gif"


def pixel_tag(url: str) -> str:
    """The ``<img>`` we add: 1x1, no border, no alt text, styled to take no room.

    Attributes and inline styles both, because some clients drop one or the other
    (Outlook ignores most CSS; Gmail drops some attributes). Where CSS applies the image is
    a zero-size block, so it adds neither a pixel nor a line box; clients still fetch it.
    """
    return (
        f'<img src="{html.escape(url, quote=True)}" width="1" height="1" alt="" border="0" '
        'style="display:block;width:0;height:0;max-width:0;max-height:0;border:0;margin:0;'
        'padding:0;overflow:hidden" />'
    )
