"""Errors raised by the renderers: each message says where and what, so a person can fix it."""

from __future__ import annotations


class RenderError(Exception):
    """A template or message could not be rendered.

    The message names the part and line when known, e.g.
    ``"message.content line 3: 'contact' has no attribute 'frist_name'"``.
    """


class HeaderInjection(RenderError):
    """A header value carries CR/LF or another control character, raw or encoded."""


class InvalidAddress(RenderError):
    """An email address is not a single, plain ``local@domain`` address."""
