"""``python -m pipeline.conversion SOURCE OUTPUT_DIR --format tf1hub|tf2``, as ``bert-beam convert``."""

import sys

from pipeline.conversion.convert import main

sys.exit(main())
