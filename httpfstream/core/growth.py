"""
`IGrowthListener`: the door by which a stream hears of its resource's
growth written by another process (`coordination.IGrowthFeed` calls it).
"""

from __future__ import annotations

from zope.interface import Interface

__all__ = ["IGrowthListener"]


class IGrowthListener(Interface):
    """
    What a stream is told of its resource's growth written by another
    process (`coordination.IGrowthFeed`); the stream's own writes reach its
    cursors the same way.
    """

    def grown(size: int) -> None:
        """The file now holds ``size`` persisted bytes."""

    def began() -> None:
        """
        An appender holds the resource elsewhere (another process): the
        stream is live until `ended`.
        """

    def ended(size: int, code: int, reason: str, complete: bool | None = None) -> None:
        """
        The appender's session ended at ``size`` bytes; followers finish
        there with ``code``.  ``complete``, when given, is whether the
        resource is complete now (read from the shared root).
        """
