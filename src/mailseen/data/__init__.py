"""Data files shipped with mailseen: network ranges, user-agent patterns, auto-reply subjects.

Read them with ``importlib.resources.files("mailseen.data")``; an operator refreshes them
into an override folder rather than editing these copies (see docs/classification.md).
"""
