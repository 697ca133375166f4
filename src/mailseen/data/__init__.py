"""Data files shipped with mailseen: network ranges (``networks.txt``, with where each list
comes from, its licence and date in ``sources.json``), user-agent patterns, auto-reply subjects.

Read them with ``importlib.resources.files("mailseen.data")``; an operator refreshes them
into an override folder rather than editing these copies (see docs/classification.md).
"""
