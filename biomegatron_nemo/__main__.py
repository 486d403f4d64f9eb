"""``python -m biomegatron_nemo`` is the ``biomegatron`` command (for ``torchrun -m biomegatron_nemo ...``)."""

import sys

from biomegatron_nemo.cli import main

if __name__ == "__main__":
    sys.exit(main())
