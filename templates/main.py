"""Flex Template entry point; runs the same way on this machine.

The template launcher runs ``python main.py --NAME=VALUE ...`` with one flag per template
parameter (templates/metadata.json) plus the job's own (--runner, --project, --region,
--temp_location, --template_location ...). Locally:
``python templates/main.py --input=docs.jsonl --output=out/emb --runner=DirectRunner``.
"""

import sys

from pipeline.run import main

if __name__ == "__main__":
    sys.exit(main())
