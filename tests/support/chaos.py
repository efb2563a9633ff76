"""
What the chaos tests (``test_chaos.py``, ``test_chaos_stateless.py``)
share: `Generator`, known bytes written into an appender's standard input
by a thread, with pauses, as a build's output would come.
"""

from __future__ import annotations

import random
import threading
import time
from typing import IO

from twisted.internet import reactor
from twisted.internet.defer import Deferred


class Generator:
    """
    Known bytes into an appender's standard input: a thread writes seeded
    random binary lines, with pauses, for ``seconds``, then closes it.

    :ivar sent: everything written so far.
    :ivar done: fires once the input is closed (or could not be written).
    """

    def __init__(self, index: int, seed: int, stdin: IO[bytes], seconds: float):
        self.index = index
        self.sent = bytearray()
        self.error: BaseException | None = None
        self.done: Deferred[None] = Deferred()
        self._rng = random.Random(f"{seed}/{index}")
        self._stdin = stdin
        self._seconds = seconds
        threading.Thread(target=self._run, daemon=True).start()

    def _line(self, n: int) -> bytes:
        body = self._rng.randbytes(self._rng.randint(0, 200))
        return b"%d:%08d:%s\n" % (self.index, n, body)

    def _run(self) -> None:
        deadline = time.monotonic() + self._seconds
        n = 0
        try:
            while time.monotonic() < deadline:
                count = self._rng.randint(1, 40)
                chunk = b"".join(self._line(n + k) for k in range(count))
                n += count
                self._stdin.write(chunk)
                self._stdin.flush()
                self.sent += chunk
                # The generator's own pace: mostly brisk, now and then idle.
                if self._rng.random() < 0.02:
                    time.sleep(self._rng.uniform(0.3, 1.5))
                else:
                    time.sleep(self._rng.uniform(0, 0.03))
            self._stdin.close()
        except OSError as e:  # the appender is gone
            self.error = e
        reactor.callFromThread(self.done.callback, None)
