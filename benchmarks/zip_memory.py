"""Benchmark: memory the letters ZIP writer holds per entry (names, central directory records).

Streams N small entries, named as the letter archive names them, through
``renderers.zipstream.write_zip`` into a non-seekable sink that keeps nothing, and prints how much the
peak RSS grew, per entry. Reproduce with:

    .venv/bin/python benchmarks/zip_memory.py --entries 200000
"""

from __future__ import annotations

import argparse
import io
import resource
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from renderers.zipstream import safe_entry_name, write_zip  # noqa: E402


class Sink(io.RawIOBase):
    """A write-only, non-seekable target that counts bytes and keeps none (like an S3 upload)."""

    def __init__(self) -> None:
        super().__init__()
        self.written = 0

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[override]
        self.written += len(data)
        return len(data)

    def tell(self) -> int:
        return self.written


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()
    written: set[bytes] = set()  # as worker.channels.letters.build_archive: one set of names, write_zip's
    payload = b"%PDF-1.7 " * 100
    entries = ((safe_entry_name(f"00000000-0000-0000-0000-{n:012d}", "Østergaard-Søren", written,
                                register=False), payload)
               for n in range(args.entries))
    before = peak_rss_mib()
    sink = Sink()
    write_zip(sink, entries, seen=written)
    grown = peak_rss_mib() - before
    print(f"command: .venv/bin/python benchmarks/zip_memory.py --entries {args.entries}")
    print(f"{args.entries} entries, {sink.written / 2**20:.1f} MiB of ZIP: peak RSS grew {grown:.1f} MiB, "
          f"{grown * 2**20 / args.entries:.0f} bytes per entry")


if __name__ == "__main__":
    main()
