"""Real media for the tests, from the Debian packages ``make test`` installs (Makefile,
SYSTEM_PACKAGES), so a fresh clone needs nothing beside it:

* ``opencv-doc``: OpenCV's sample videos, opened by ``cv2.VideoCapture`` like a webcam.
  :data:`VTEST` is people walking in a street (768x576, 10 fps, 795 frames, MJPEG/AVI) and
  :data:`MEGAMIND` a film trailer clip with fast motion (720x528, 23.976 fps, 270 frames).
* ``espeak-ng`` and ``sox``: :func:`speech_wav` speaks an English sentence to a WAV file (48 kHz,
  mono, 16-bit PCM, about 8 s), the stand-in microphone's input (TESTING.md's recipe).
"""

from __future__ import annotations

import functools
import shutil
import subprocess
import tempfile
from pathlib import Path

OPENCV_SAMPLES = Path("/usr/share/doc/opencv-doc/examples/data")
"""Where Debian's ``opencv-doc`` puts OpenCV's sample data."""

VTEST = OPENCV_SAMPLES / "vtest.avi"
MEGAMIND = OPENCV_SAMPLES / "Megamind.avi"

SPEECH_TEXT = (
    "zmeet is a meeting, chat and game system for your own machine. This sentence goes into "
    "one microphone, through the broker, and out of another speaker, twenty milliseconds at a "
    "time."
)


@functools.lru_cache(maxsize=1)
def speech_wav() -> Path:
    """A WAV file of :data:`SPEECH_TEXT` spoken by espeak-ng, resampled by sox to 48 kHz mono
    16-bit PCM; made once per test run in the temporary directory. Raises
    ``subprocess.CalledProcessError`` if espeak-ng or sox fails, and FileNotFoundError when one
    is missing (``make test`` installs both)."""
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"{tool} is needed for the speech tests (make test has it)")
    folder = Path(tempfile.mkdtemp(prefix="zmeet-speech-"))
    spoken = folder / "espeak.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-w", str(spoken), SPEECH_TEXT], check=True,
                   timeout=60, capture_output=True)
    out = folder / "speech-en.wav"
    subprocess.run(["sox", str(spoken), "-r", "48000", "-c", "1", "-b", "16",
                    "-e", "signed-integer", str(out)], check=True, timeout=60,
                   capture_output=True)
    return out
