"""`python -m mfn4rec_tf.serve`: see `mfn4rec_tf.serve.cli`."""

import sys

from mfn4rec_tf.serve.cli import main

if __name__ == "__main__":
    sys.exit(main())
