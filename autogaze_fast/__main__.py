"""``python -m autogaze_fast ...`` (and ``torchrun -m autogaze_fast extract ...``): the ``autogaze-fast`` CLI."""

import sys

from autogaze_fast.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
