"""Readable contrast: every text colour of the stylesheet meets WCAG 2.1 AA (4.5:1) on the
page and card backgrounds."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

SITE = Path(__file__).resolve().parents[1] / "src" / "mailseen" / "web" / "site"
CSS = SITE / "static" / "app.css"
TEXT_COLOURS = ("--fg", "--muted", "--accent", "--ok", "--warn", "--err")
BACKGROUNDS = ("--bg", "--card")


def _variables() -> dict[str, str]:
    root = re.search(r":root\s*\{([^}]*)\}", CSS.read_text())
    assert root is not None
    found = dict(re.findall(r"(--[\w-]+):\s*(#[0-9a-fA-F]{3}(?:[0-9a-fA-F]{3})?)\b",
                            root.group(1)))
    # "#fff" is "#ffffff"
    return {k: v if len(v) == 7 else "#" + "".join(c * 2 for c in v[1:])
            for k, v in found.items()}


def _luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def _contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


@pytest.mark.parametrize("text", TEXT_COLOURS)
@pytest.mark.parametrize("background", BACKGROUNDS)
def test_text_colours_meet_wcag_aa(text: str, background: str) -> None:
    colours = _variables()
    ratio = _contrast(colours[text], colours[background])
    assert ratio >= 4.5, f"{text} on {background}: {ratio:.2f}:1"


def test_the_white_on_accent_button_is_readable() -> None:
    assert _contrast("#ffffff", _variables()["--accent"]) >= 4.5
