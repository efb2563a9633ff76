"""
What the archive's S3 client costs the server (docs/PERFORMANCE.md,
"Object storage client"): ``python bench/s3.py [--mb 512]``.

Starts ``moto_server`` on 127.0.0.1 (the tests' S3 API server), writes a
file of ``--mb`` MiB, uploads it with `S3Client.put_file` (multipart, 16
MiB parts, each hashed in a thread then streamed), downloads it whole to
a consumer that counts, and reports for each direction: this process's
CPU seconds per GiB (every thread: reads, SHA-256, HTTP), the wall-clock
rate (bounded by moto, a Python emulator, far below a real store), and how
far the process's resident memory rose above where it started.

Bounded: one moto_server, one upload and one download of ``--mb`` MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, task
from twisted.internet.interfaces import IConsumer
from zope.interface import implementer

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

from support.s3 import ACCESS_KEY, REGION, SECRET_KEY, MotoServer  # noqa: E402

from httpfstream.shared.s3 import S3Client  # noqa: E402

MiB = 1 << 20


@implementer(IConsumer)
class Count:
    def __init__(self) -> None:
        self.n = 0

    def registerProducer(self, producer: Any, streaming: bool) -> None:
        pass

    def unregisterProducer(self) -> None:
        pass

    def write(self, data: bytes) -> None:
        self.n += len(data)


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rss() -> int:
    """Resident memory now, in bytes (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def measure(what: str, size: int, run: Any) -> dict[str, float]:
    base = rss()
    peak = base

    def sample() -> None:
        nonlocal peak
        peak = max(peak, rss())

    sampler = task.LoopingCall(sample)
    sampler.start(0.05)
    wall, used = time.perf_counter(), cpu()
    await run()
    wall, used = time.perf_counter() - wall, cpu() - used
    sampler.stop()
    row = {
        "cpu_s_per_gib": used / (size / (1 << 30)),
        "mb_per_s": size / wall / 1e6,
        "rss_rise_mib": (peak - base) / MiB,
    }
    print(
        f"{what}: {row['cpu_s_per_gib']:.2f} CPU s/GiB, {row['mb_per_s']:.0f} MB/s"
        f" (moto-bound), RSS +{row['rss_rise_mib']:.0f} MiB"
    )
    return row


async def main(reactor: Any, mb: int) -> None:
    moto = MotoServer()
    folder = tempfile.TemporaryDirectory()
    try:
        bucket = moto.new_bucket()
        os.environ.update(
            AWS_ACCESS_KEY_ID=ACCESS_KEY,
            AWS_SECRET_ACCESS_KEY=SECRET_KEY,
            AWS_ENDPOINT_URL_S3=moto.url,
            AWS_DEFAULT_REGION=REGION,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=os.devnull,
            AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        )
        path = Path(folder.name) / "blob"
        with open(path, "wb") as f:
            for _ in range(mb):
                f.write(os.urandom(MiB))
        size = mb * MiB
        client = await S3Client.from_environment(f"s3://{bucket}/bench")
        try:
            up = await measure(
                "put_file", size, lambda: client.put_file("bench/blob", path)
            )
            got = Count()
            down = await measure("get", size, lambda: client.get("bench/blob", got))
            assert got.n == size
        finally:
            await client.close()
        print(json.dumps({"mb": mb, "put_file": up, "get": down}))
    finally:
        moto.stop()
        folder.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=512)
    args = parser.parse_args()
    task.react(lambda r: defer.Deferred.fromCoroutine(main(r, args.mb)))
