"""Analyse a trained run: held-out metrics and pictures of the latent space.

    python analysis.py runs/vae              # writes PNGs, explorer.html and metrics.json
    python analysis.py runs/ae --show        # also opens the figures in windows
    python analysis.py --help                # every flag and its default

The work is in report.py; this script parses the flags first, so that --help
answers before Keras loads.
"""

import os
import sys

import settings

# Keep TensorFlow's start-up chatter out of the user's terminal; set before Keras loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    analysis_settings = settings.parse_analysis_flags(argv)
    import report  # Keras loads here, after the flags: --help and flag errors answer at once

    return report.main(analysis_settings)


if __name__ == "__main__":
    sys.exit(main())
