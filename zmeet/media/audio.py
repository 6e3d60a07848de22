"""Audio domain logic, pure: block format, levels, mixing of every speaker, the active speaker,
and the audio delay that video is aligned to (docs/protocol.md, "Audio frames").

Audio travels as blocks of :data:`FRAME_SAMPLES` samples (20 ms at 48 kHz, mono, signed
16-bit): numpy ``int16`` arrays of shape ``(FRAME_SAMPLES,)``. Times are passed in (seconds
from a monotonic clock, or microseconds since the Unix epoch where named ``_us``).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from .jitter import DEFAULT_MAX_FRAMES, DEFAULT_TARGET_FRAMES, JitterBuffer

SAMPLE_RATE_HZ = 48_000
CHANNELS = 1
AUDIO_PTIME_MS = 20
"""Duration of one block (aiortc's ``AUDIO_PTIME = 0.020``)."""
FRAME_SAMPLES = SAMPLE_RATE_HZ * AUDIO_PTIME_MS // 1000
"""Samples per block: 960."""
SAMPLE_BYTES = 2

SPEECH_LEVEL_DBFS = -45.0
"""A block louder than this counts as speech (for the active speaker and last-N)."""

LEVEL_DECAY_S = 0.5
"""Time constant of a speaker's smoothed level (for the active speaker)."""

SILENCE_DBFS = -120.0

MAX_SYNC_DELAY_MS = 250
"""Video is never held back more than this to wait for its audio: frame age stays bounded."""


def silence(samples: int = FRAME_SAMPLES) -> np.ndarray:
    """A block of zeros, ``int16`` of shape ``(samples,)``."""
    return np.zeros(samples, np.int16)


def level_dbfs(block: np.ndarray) -> float:
    """RMS level of an ``int16`` block in dBFS (0 is a full-scale square wave), at least
    :data:`SILENCE_DBFS`."""
    if block.size == 0:
        return SILENCE_DBFS
    rms = math.sqrt(float(np.mean(np.square(block, dtype=np.float64)))) / 32768.0
    return max(SILENCE_DBFS, 20 * math.log10(rms)) if rms > 0 else SILENCE_DBFS


def mix(blocks: Iterable[np.ndarray], samples: int = FRAME_SAMPLES) -> np.ndarray:
    """Sum of ``int16`` blocks of shape ``(samples,)``, clipped to int16 (silence for none)."""
    total = np.zeros(samples, np.int32)
    for block in blocks:
        total += block
    return np.clip(total, -32768, 32767).astype(np.int16)


class ActiveSpeaker:
    """The loudest recent speaker, from each block's level (Jitsi's dominant speaker).

    :meth:`observe` takes a speaker's block level at ``now_s``; a smoothed level decays with
    :data:`LEVEL_DECAY_S`. :meth:`current` is the speaker with the highest smoothed level above
    :data:`SPEECH_LEVEL_DBFS`, or None. :meth:`last_spoke_s` tells when a speaker last spoke
    (for ``--max-streams``: the last N speakers).
    """

    def __init__(self) -> None:
        self._level: dict[str, tuple[float, float]] = {}
        self._spoke_s: dict[str, float] = {}

    def observe(self, speaker: str, dbfs: float, now_s: float) -> None:
        old = self._level.get(speaker)
        if old is None:
            smoothed = dbfs
        else:
            prev, t = old
            a = math.exp(-max(0.0, now_s - t) / LEVEL_DECAY_S)
            smoothed = max(dbfs, a * prev + (1 - a) * dbfs)  # fast attack, slow decay
        self._level[speaker] = (smoothed, now_s)
        if dbfs > SPEECH_LEVEL_DBFS:
            self._spoke_s[speaker] = now_s

    def current(self, now_s: float) -> str | None:
        best, best_level = None, SPEECH_LEVEL_DBFS
        for speaker, (level, t) in self._level.items():
            if now_s - t > 3 * LEVEL_DECAY_S:
                continue
            if level > best_level:
                best, best_level = speaker, level
        return best

    def last_spoke_s(self, speaker: str) -> float | None:
        return self._spoke_s.get(speaker)

    def forget(self, speaker: str) -> None:
        self._level.pop(speaker, None)
        self._spoke_s.pop(speaker, None)


@dataclass
class MixedBlock:
    """One playout period: the ``mixed`` block, each playing speaker's level in dBFS, and the
    active speaker after it."""

    mixed: np.ndarray
    levels: dict[str, float]
    active: str | None


class AudioMixer:
    """Every speaker's :class:`JitterBuffer`, mixed once per playout period.

    :meth:`push` (from the gevent hub, as frames arrive) and :meth:`pull` (from the playout
    clock: PortAudio's callback thread, or a greenlet) may run in different threads: both take
    an internal lock for a few dict and numpy operations. :meth:`pull` takes ``now_s``
    (monotonic) and ``now_us`` (wall clock, µs since the epoch) and records, per speaker, the
    audio delay: wall clock minus the capture time of the block just played, plus
    ``output_latency_ms`` (the device's own). :meth:`audio_delay_ms` gives it to video sync.
    """

    def __init__(
        self,
        *,
        target_frames: int = DEFAULT_TARGET_FRAMES,
        max_frames: int = DEFAULT_MAX_FRAMES,
        output_latency_ms: float = 0.0,
    ) -> None:
        self.target_frames = target_frames
        self.max_frames = max_frames
        self.output_latency_ms = output_latency_ms
        self.buffers: dict[str, JitterBuffer] = {}
        self.speaker = ActiveSpeaker()
        self.pulls = 0
        self._delay_ms: dict[str, float] = {}
        self._lock = threading.Lock()

    def push(self, sender: str, seq: int, capture_ts_us: int, block: np.ndarray) -> bool:
        """Queue ``sender``'s block ``seq``; False if it came too late to play."""
        with self._lock:
            buf = self.buffers.get(sender)
            if buf is None:
                buf = self.buffers[sender] = JitterBuffer(self.target_frames, self.max_frames)
            return buf.push(seq, capture_ts_us, block)

    def remove(self, sender: str) -> None:
        """Forget ``sender`` (they left)."""
        with self._lock:
            self.buffers.pop(sender, None)
            self._delay_ms.pop(sender, None)
            self.speaker.forget(sender)

    def pull(self, now_s: float, now_us: int) -> MixedBlock:
        """Mix the next block of every speaker (a missing block is silence)."""
        with self._lock:
            self.pulls += 1
            blocks, levels = [], {}
            for sender, buf in self.buffers.items():
                block = buf.pop()
                if block is None:
                    continue
                blocks.append(block)
                level = level_dbfs(block)
                levels[sender] = level
                self.speaker.observe(sender, level, now_s)
                if buf.played_capture_ts_us is not None:
                    self._delay_ms[sender] = (
                        (now_us - buf.played_capture_ts_us) / 1000 + self.output_latency_ms
                    )
            return MixedBlock(mix(blocks), levels, self.speaker.current(now_s))

    def audio_delay_ms(self, sender: str) -> float | None:
        """How long after capture ``sender``'s audio is heard now, in ms (None: not playing)."""
        with self._lock:
            buf = self.buffers.get(sender)
            if buf is None or not buf.playing:
                return None
            return self._delay_ms.get(sender)

    def active_speaker(self, now_s: float) -> str | None:
        with self._lock:
            return self.speaker.current(now_s)

    def last_spoke_s(self, sender: str) -> float | None:
        with self._lock:
            return self.speaker.last_spoke_s(sender)

    def stats(self) -> dict[str, dict[str, int]]:
        with self._lock:
            return {s: vars(b.stats).copy() for s, b in self.buffers.items()}


def video_due_us(capture_ts_us: int, audio_delay_ms: float | None, now_us: int) -> int:
    """When a video frame captured at ``capture_ts_us`` should be shown so that it plays with
    its sender's audio (heard ``audio_delay_ms`` after capture): at capture time plus that
    delay, capped at :data:`MAX_SYNC_DELAY_MS` after capture, and never before ``now_us``
    (no audio playing: at once)."""
    if audio_delay_ms is None:
        return now_us
    delay_ms = min(max(0.0, audio_delay_ms), MAX_SYNC_DELAY_MS)
    return max(now_us, capture_ts_us + int(delay_ms * 1000))
