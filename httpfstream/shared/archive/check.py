"""
`check_archive`: the start-up check of ``--archive``, before twistd runs
its reactor, so that a wrong bucket, a missing credential or an endpoint
that does not answer stops the server with one line, as other start-up
errors do, instead of a server that runs and answers 503.

The check is `S3Client.check` itself (a HEAD of the bucket, signed as every
request is), on a reactor of its own that runs only for it: the global
reactor cannot run before twistd starts it, nor run twice.  Nothing of that
reactor outlives the check (its client's connections and threads are
closed first).
"""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from ..s3 import ArchiveURL, S3Client

__all__ = ["check_archive"]


def check_archive(archive: ArchiveURL, timeout: float = 10.0) -> None:
    """
    Return once the bucket is there and reachable with the standard AWS
    configuration; else raise `ValueError` saying why, in one line.
    """
    from twisted.internet.selectreactor import SelectReactor

    reactor = SelectReactor()
    outcome: list[object] = []

    async def check() -> None:
        client = await S3Client.from_environment(
            archive, reactor=reactor, timeout=timeout, attempts=2
        )
        try:
            await client.check()
        finally:
            await client.close()

    def run() -> None:
        d = Deferred.fromCoroutine(check())
        d.addBoth(outcome.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run(installSignalHandlers=False)
    result = outcome[0] if outcome else None
    if isinstance(result, Failure):
        raise ValueError(result.getErrorMessage()) from None
