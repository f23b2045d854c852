"""Score new images as anomalies with a trained run: CSV of source, error, threshold, anomaly.

    python detect.py runs/ae photos/ scan.png more.npz            # CSV on standard output
    python detect.py runs/ae photos/ --out scores.csv --montage worst.png
    python detect.py runs/ae --export detector.onnx               # for examples/onnx_detect.py
    python detect.py runs/ae --calibrate normal/ --anomalous defects/   # threshold: best F1
    python detect.py --help                                       # every flag and its default

An image is an anomaly when its reconstruction error is above the threshold
that training stored with the run. The exit status is 0 whether or not there
are anomalies. The work is in detection.py; this script parses the flags first,
so that --help answers before Keras loads.
"""

import os
import sys

import settings

# Keep TensorFlow's start-up chatter out of the user's terminal; set before Keras loads.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv=None):
    detect_settings = settings.parse_detect_flags(argv)
    # Keras loads here, after the flags: --help and flag errors answer at once.
    import calibration
    import detection

    return detection.main(detect_settings, calibration.calibrate)


if __name__ == "__main__":
    sys.exit(main())
