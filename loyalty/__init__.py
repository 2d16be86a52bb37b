"""Loyalty Stream, installed under this one import name.

In the repository the packages sit at the top level (``streams/``, ``agents/``, ``tables/``,
``core/``, ``schemas/`` ...) and ``loyalty/`` links to each of them, so that the source tree,
an editable install and a wheel all import them as ``loyalty.<package>``.
"""
