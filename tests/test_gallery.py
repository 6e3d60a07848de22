"""The meeting gallery on a real (virtual) screen: two ``zmeet join`` processes and a broker;
alice sends a video file, her Xvfb screen and (muted) audio; bob's window, on the same Xvfb,
is screenshotted with ImageMagick's ``import``.

Nothing sleeps to wait: the test takes screenshots until what it expects is on the screen, a
bounded number of times, and fails with the last one's figures.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from proc import ZMEET, Proc, start_broker
from test_audio import _alsa_home
from testmedia import VTEST
from xvfb import xvfb_display

from zmeet.client.media import THUMB_WIDTH
from zmeet.media import KIND_COLOURS_BGR
from zmeet.media.tiling import LABEL_BAR_PX, MUTED_BGR, VIDEO_OFF_BGR, meeting_layout

pytestmark = pytest.mark.media

SCREEN_W, SCREEN_H = 1920, 1080  # bob's 1280x720 window leaves the painted root visible
CANVAS_W, CANVAS_H = 1280, 720
KNOWN_BGR = (40, 200, 240)
SHOTS = 60  # screenshots taken at most per expectation


@pytest.fixture
def xvfb(tmp_path: Path) -> Iterator[str]:
    with xvfb_display(tmp_path / "xvfb.log", SCREEN_W, SCREEN_H) as display:
        yield display


def _near(image: np.ndarray, bgr: tuple[int, int, int], tol: int = 30) -> int:
    return int(np.all(np.abs(image.astype(int) - np.array(bgr)) <= tol, axis=2).sum())


def _screenshot(display: str, path: Path) -> np.ndarray:
    subprocess.run(["import", "-display", display, "-window", "root", str(path)],
                   check=True, timeout=30, capture_output=True)
    image = cv2.imread(str(path))
    assert image is not None
    return image


def _until(display: str, path: Path, check: Callable[[np.ndarray], dict]) -> dict:
    """Screenshot until ``check`` returns figures with ``ok`` True (at most SHOTS times)."""
    figures: dict = {}
    for _ in range(SHOTS):
        figures = check(_screenshot(display, path))
        if figures["ok"]:
            return figures
    raise AssertionError(f"not on the screen: {figures}")


def test_gallery_shows_both_tiles_the_screen_share_large_and_the_controls(
    xvfb: str, tmp_path: Path
) -> None:
    paint = tmp_path / "paint.png"
    cv2.imwrite(str(paint), np.full((64, 64, 3), KNOWN_BGR, np.uint8))
    subprocess.run(["display", "-display", xvfb, "-window", "root", str(paint)], check=False,
                   timeout=30, capture_output=True)
    broker, endpoints = start_broker(tmp_path / "data")
    procs = [broker]
    env = {"DISPLAY": xvfb, "QT_QPA_PLATFORM": "xcb"}
    alice_home = _alsa_home(tmp_path / "alice", "/dev/zero")
    stage, (bob_tile, alice_tile) = meeting_layout(2, CANVAS_W, CANVAS_H, stage=True)
    assert stage is not None

    def body(shot: np.ndarray, rect) -> np.ndarray:
        return shot[rect.y + LABEL_BAR_PX + 4: rect.y + rect.h - 4, rect.x + 4: rect.x + rect.w - 4]

    def bar(shot: np.ndarray, rect) -> np.ndarray:
        return shot[rect.y + 2: rect.y + LABEL_BAR_PX, rect.x + 2: rect.x + rect.w - 2]

    try:
        join = [*ZMEET, "join", "gal", "--broker", endpoints["entry"]]
        bob = Proc([*join, "--nick", "bob", "--duration", "120", "--stats"], stdin=True,
                   env=env)
        procs.append(bob)
        bob.expect(r"^-- joined #gal as bob", timeout_s=30)
        alice = Proc([*join, "--nick", "alice", "--no-display", "--video-file",
                      str(VTEST), "--screen", "--fps", "5", "--audio",
                      "--duration", "120"], stdin=True, env={**env, "HOME": str(alice_home)})
        procs.append(alice)
        alice.expect(r"^-- joined #gal as alice", timeout_s=30)
        alice.send("/mute")
        alice.expect(r"^-- muted", timeout_s=30)

        def stage_view(shot: np.ndarray) -> dict:
            a = body(shot, alice_tile)
            figures = {
                "stage known colour": _near(body(shot, stage), KNOWN_BGR),
                "stage screen label": _near(bar(shot, stage), KIND_COLOURS_BGR["screen"], 8),
                "alice label": _near(bar(shot, alice_tile), KIND_COLOURS_BGR["video"], 8),
                "alice muted badge": _near(bar(shot, alice_tile), MUTED_BGR, 8),
                "alice picture std": float(a.std()),
                "bob label": _near(bar(shot, bob_tile), KIND_COLOURS_BGR["video"], 8),
                "bob dark": _near(body(shot, bob_tile), VIDEO_OFF_BGR, 6)
                / body(shot, bob_tile)[..., 0].size,
            }
            figures["ok"] = (
                figures["stage known colour"] > 50_000 and figures["stage screen label"] > 2_000
                and figures["alice label"] > 500 and figures["alice muted badge"] > 300
                and figures["alice picture std"] > 20 and figures["bob label"] > 500
                and figures["bob dark"] > 0.9
            )
            return figures

        print("stage view:", _until(xvfb, tmp_path / "stage.png", stage_view))

        alice.send("/screen off")
        alice.send("/video off")
        alice.expect(r"^-- video off", timeout_s=30)
        gallery, (bob_g, alice_g) = meeting_layout(2, CANVAS_W, CANVAS_H, stage=False)

        def gallery_view(shot: np.ndarray) -> dict:
            window = shot[:CANVAS_H, :CANVAS_W]
            figures = {
                "screen label": _near(window, KIND_COLOURS_BGR["screen"], 8),
                "alice dark": _near(body(shot, alice_g), VIDEO_OFF_BGR, 6)
                / body(shot, alice_g)[..., 0].size,
                "alice label": _near(bar(shot, alice_g), KIND_COLOURS_BGR["video"], 8),
            }
            figures["ok"] = (figures["screen label"] == 0 and figures["alice dark"] > 0.9
                             and figures["alice label"] > 500)
            return figures

        print("gallery after /screen off, /video off:",
              _until(xvfb, tmp_path / "gallery.png", gallery_view))
        alice.send("/quit")
        assert alice.wait(30) == 0

        def alice_gone(shot: np.ndarray) -> dict:
            one = meeting_layout(1, CANVAS_W, CANVAS_H, stage=False)[1][0]
            figures = {"bob only": _near(bar(shot, one), KIND_COLOURS_BGR["video"], 8)
                       > one.w * 10}
            figures["ok"] = figures["bob only"]
            return figures

        _until(xvfb, tmp_path / "gone.png", alice_gone)  # her tile goes when she leaves
        bob.send("/quit")
        assert bob.wait(30) == 0
        stats = next(json.loads(line) for line in bob.stderr if line.startswith('{"type": "stats"'))
        # beside the stage, alice's tile was small: bob took her thumbnail (simulcast's low
        # layer), at most THUMB_WIDTH wide, and never his own frames back
        thumb = stats["received"]["alice"]["thumb"]
        assert thumb["frames"] > 0 and 0 < thumb["width"] <= THUMB_WIDTH, thumb
        assert stats["dropped"]["own"] == 0
    finally:
        for proc in reversed(procs):
            proc.stop()
