"""Train the convolutional variational autoencoder (VAE) on MNIST.

    python train_vae.py                      # the default run, into runs/vae
    python train_vae.py --epochs 100         # the original scripts' run
    python train_vae.py --help               # every flag and its default
"""

import os
import sys

import settings

# Keep TensorFlow's start-up chatter out of the user's terminal; set before Keras loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    run_settings, given = settings.parse_training_flags("vae", argv)
    import training  # Keras loads here, after the flags: --help and flag errors answer at once

    return training.run(run_settings, given)


if __name__ == "__main__":
    sys.exit(main())
