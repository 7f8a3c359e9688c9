"""``python -m pipeline.verify PREFIX``: checks a run's shards against its manifest.

Exit status 0 when every shard, TFRecord or Parquet, is present with the record count (frames
counted, or a Parquet footer's rows), size and checksum the manifest records and the counts add up;
1 with one line per difference otherwise.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from pipeline.manifest import read_manifest, verify

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pipeline.verify", description=__doc__.split("\n")[0])
    parser.add_argument("prefix", help="the --output prefix of the run")
    args = parser.parse_args(argv)
    problems = verify(args.prefix)
    if problems:
        for problem in problems:
            print(f"MISMATCH {problem}")
        return 1
    manifest = read_manifest(args.prefix)
    print(f"OK {args.prefix}: {len(manifest['shards'])} shards, {manifest['records']} records, "
          f"counters {manifest['counters']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
