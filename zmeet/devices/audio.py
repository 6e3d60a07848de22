"""Microphone, speaker, audio codecs and the mixed-audio WAV file.

Blocks are 20 ms of 48 kHz mono signed 16-bit audio (:mod:`zmeet.media.audio`): numpy
``int16`` arrays of shape ``(960,)``.

Threads (DESIGN.md, "Rules of the gevent hub"): PortAudio calls :class:`Microphone`'s and
:class:`Speaker`'s callbacks in its own thread. The microphone's callback copies the block into
a bounded deque (newest wins: the oldest block is dropped when a greenlet does not keep up) and
wakes the hub through the loop's ``async_`` watcher, whose ``send()`` is the one gevent call
that is safe from another thread. The speaker's callback never touches gevent: it pulls a mixed
block from a lock-protected :class:`~zmeet.media.audio.AudioMixer`.

Devices that are not clocked (ALSA's ``null`` and ``file`` plugins, used by the tests) let
PortAudio run callbacks as fast as the CPU allows; :class:`RealtimePacer` holds such a callback
back to the wall clock, and never delays a real sound card, whose callbacks come on time.

Codecs: Opus through PyAV (``av``, which bundles FFmpeg with libopus) when it is installed,
else raw PCM (``s16le``). Both sides accept both.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ..errors import DeviceError, RemoteProtocolError
from ..media.audio import AUDIO_PTIME_MS, CHANNELS, FRAME_SAMPLES, SAMPLE_BYTES, SAMPLE_RATE_HZ

log = logging.getLogger("zmeet.devices")

DEFAULT_OPUS_BITRATE_BPS = 32_000
"""Opus bitrate per speaker: 32 kbit/s, wideband speech at good quality (RFC 7587, 3.1.1)."""

PCM_BITRATE_BPS = SAMPLE_RATE_HZ * SAMPLE_BYTES * 8 * CHANNELS
"""Raw PCM per speaker: 768 kbit/s."""

MIC_QUEUE_BLOCKS = 25
"""Captured blocks (500 ms) kept for the publishing greenlet; older ones are dropped."""

CAPTURE_AHEAD_MS = 0.0
"""How far ahead of the wall clock an unclocked microphone may deliver (none: it cannot hear
the future)."""

PLAYBACK_AHEAD_MS = 40.0
"""How far ahead of the wall clock an unclocked speaker may be fed (its buffer)."""

CODECS = ("opus", "pcm")


# --- codecs ------------------------------------------------------------------------------------


def opus_available() -> bool:
    """True if PyAV with an Opus encoder and decoder is installed."""
    try:
        import av
    except ImportError:
        return False
    return "libopus" in av.codecs_available


def default_codec() -> str:
    """``"opus"`` if :func:`opus_available`, else ``"pcm"``."""
    return "opus" if opus_available() else "pcm"


def _opus_context(mode: Literal["r", "w"]) -> Any:
    """A PyAV libopus codec context for 48 kHz mono s16, ``mode`` "w" (encode) or "r"
    (decode). Raises :class:`DeviceError` without PyAV."""
    if not opus_available():
        raise DeviceError("Opus needs PyAV: pip install av")
    import av

    ctx = av.CodecContext.create("libopus", mode)
    ctx.sample_rate = SAMPLE_RATE_HZ
    ctx.layout = "mono"
    ctx.format = "s16"
    return ctx


class AudioEncoder:
    """Encodes 20 ms blocks with ``codec`` (``"opus"`` at ``bitrate_bps``, or ``"pcm"``).

    :meth:`encode` takes an ``int16`` block of shape ``(960,)`` and returns the payload bytes.
    Raises ValueError for an unknown codec, :class:`DeviceError` if Opus is asked for and PyAV
    is not installed.
    """

    def __init__(self, codec: str, bitrate_bps: int = DEFAULT_OPUS_BITRATE_BPS) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        self.codec = codec
        self.bitrate_bps = bitrate_bps if codec == "opus" else PCM_BITRATE_BPS
        self._ctx: Any = None
        self._pts = 0
        if codec == "opus":
            ctx = _opus_context("w")
            ctx.bit_rate = bitrate_bps
            ctx.options = {"application": "voip", "frame_duration": str(AUDIO_PTIME_MS)}
            ctx.open()
            self._ctx = ctx

    def encode(self, block: np.ndarray) -> bytes:
        if self.codec == "pcm":
            return block.astype("<i2", copy=False).tobytes()
        import av

        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(block, np.int16).reshape(1, -1), format="s16", layout="mono"
        )
        frame.sample_rate = SAMPLE_RATE_HZ
        frame.pts = self._pts
        self._pts += block.shape[0]
        return b"".join(bytes(packet) for packet in self._ctx.encode(frame))


class AudioDecoder:
    """Decodes payloads of ``codec`` into ``int16`` arrays of shape ``(n,)`` (960 per 20 ms
    frame). :meth:`decode` raises :class:`RemoteProtocolError` for a payload that does not
    decode (drop it and go on). Raises ValueError for an unknown codec, :class:`DeviceError`
    for Opus without PyAV."""

    def __init__(self, codec: str) -> None:
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {', '.join(CODECS)}, got {codec!r}")
        self.codec = codec
        self._ctx: Any = None
        if codec == "opus":
            self._ctx = _opus_context("r")

    def decode(self, payload: bytes | memoryview) -> np.ndarray:
        if self.codec == "pcm":
            if len(payload) % SAMPLE_BYTES:
                raise RemoteProtocolError("PCM payload of an odd number of octets")
            return np.frombuffer(payload, "<i2").astype(np.int16)
        import av

        try:
            frames = self._ctx.decode(av.Packet(bytes(payload)))
        except (av.FFmpegError, ValueError) as exc:
            raise RemoteProtocolError(f"Opus payload does not decode: {exc}") from None
        parts = [f.to_ndarray().reshape(-1).astype(np.int16, copy=False) for f in frames]
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)


# --- pacing ------------------------------------------------------------------------------------


class RealtimePacer:
    """Holds an audio callback back to the wall clock when its device is not clocked.

    :meth:`wait` is called once per block in the device's callback thread: block ``k`` is not
    handed over before ``t0 + k * 20 ms - ahead_ms`` (``t0`` the first call). A real device's
    callbacks come no earlier than that, so it never waits; ALSA's ``file``/``null`` plugins
    are held to real time. A device that falls behind restarts the schedule (no burst).
    """

    def __init__(self, ahead_ms: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ahead_s = ahead_ms / 1000
        self.clock = clock
        self.waited = 0
        self._t0: float | None = None
        self._k = 0

    def wait(self) -> None:
        now = self.clock()
        if self._t0 is None:
            self._t0, self._k = now, 0
        due = self._t0 + self._k * AUDIO_PTIME_MS / 1000 - self.ahead_s
        self._k += 1
        if due - now > 0:
            self.waited += 1
            time.sleep(due - now)  # the device's own thread, never the gevent hub
        elif now - due > 0.2:  # the device stalled: start again from now
            self._t0, self._k = now, 1


# --- microphone --------------------------------------------------------------------------------


class Microphone:
    """Captures 20 ms blocks from input ``device`` (a PortAudio index or name; None: the
    default) with sounddevice, 48 kHz mono int16.

    Create and :meth:`open` it in a greenlet of the hub that will :meth:`read` it. :meth:`read`
    waits cooperatively and returns the blocks captured since the last call as
    ``[(capture_ts_us, block), ...]``, oldest first; at most :data:`MIC_QUEUE_BLOCKS` are kept
    (older ones are dropped and counted in :attr:`dropped`). ``capture_ts_us`` is the wall
    clock at the block's first sample, microseconds since the Unix epoch.

    Raises :class:`DeviceError` from :meth:`open` if the device cannot be opened.
    """

    def __init__(self, device: int | str | None = None) -> None:
        self.device = device
        self.captured = 0
        self.dropped = 0
        self.status_flags = 0
        self._blocks: collections.deque[tuple[int, np.ndarray]] = collections.deque()
        self._stream: Any = None
        self._async: Any = None
        self._ready: Any = None
        self._pacer = RealtimePacer(CAPTURE_AHEAD_MS)

    def open(self) -> None:
        import gevent
        import gevent.event

        try:
            import sounddevice as sd
        except OSError as exc:  # PortAudio itself is missing
            raise DeviceError(f"no audio: {exc}") from None
        self._ready = gevent.event.Event()
        self._async = gevent.get_hub().loop.async_()
        self._async.start(self._ready.set)
        try:
            self._stream = sd.InputStream(
                samplerate=SAMPLE_RATE_HZ, channels=CHANNELS, dtype="int16",
                blocksize=FRAME_SAMPLES, device=self.device, callback=self._callback,
            )
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise DeviceError(f"cannot open the microphone {self.device!r}: {exc}") from None

    def _callback(self, indata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        # PortAudio's thread: no gevent here but the async watcher's send()
        self._pacer.wait()
        if status:
            self.status_flags += 1
        ts_us = time.time_ns() // 1000 - frames * 1_000_000 // SAMPLE_RATE_HZ
        self._blocks.append((ts_us, indata[:, 0].copy()))
        self.captured += 1
        while len(self._blocks) > MIC_QUEUE_BLOCKS:
            self._blocks.popleft()
            self.dropped += 1
        watcher = self._async
        if watcher is not None:
            watcher.send()

    def read(self, timeout_s: float | None = None) -> list[tuple[int, np.ndarray]]:
        """Blocks captured since the last call (waits for at least one, up to ``timeout_s``)."""
        if self._ready is None:
            raise RuntimeError("the microphone is not open")
        if not self._blocks:
            self._ready.clear()
            if not self._blocks:
                self._ready.wait(timeout_s)
        out = []
        while self._blocks:
            out.append(self._blocks.popleft())
        return out

    def close(self) -> None:
        """Stop capturing. Idempotent; logs, never raises."""
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:
                log.exception("microphone: closing failed")
        watcher, self._async = self._async, None
        if watcher is not None:
            watcher.stop()
            watcher.close()
        if self._ready is not None:
            self._ready.set()


# --- speaker -----------------------------------------------------------------------------------


class WavWriter:
    """A 48 kHz mono 16-bit WAV file written block by block, from any thread (a lock)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.blocks = 0
        self._lock = threading.Lock()
        try:
            self._wav: wave.Wave_write | None = wave.open(str(self.path), "wb")
        except OSError as exc:
            raise DeviceError(f"cannot write {self.path}: {exc}") from None
        self._wav.setnchannels(CHANNELS)
        self._wav.setsampwidth(SAMPLE_BYTES)
        self._wav.setframerate(SAMPLE_RATE_HZ)

    def write(self, block: np.ndarray) -> None:
        with self._lock:
            if self._wav is not None:
                self._wav.writeframesraw(block.astype("<i2", copy=False).tobytes())
                self.blocks += 1

    def close(self) -> None:
        with self._lock:
            wav, self._wav = self._wav, None
            if wav is not None:
                wav.close()


class Speaker:
    """Plays what ``pull()`` returns, one ``int16`` block of shape ``(960,)`` per 20 ms.

    With ``device`` False there is no sound card: a plain OS thread calls ``pull()`` every
    20 ms of the wall clock (the playout clock for ``--record`` without ``--audio``, and for
    tests). Otherwise ``device`` is a PortAudio output index or name (None: the default) and
    PortAudio's callback thread calls ``pull()``; it must not block and must not touch gevent.
    :attr:`latency_ms` is the device's output latency (0 without one).

    Raises :class:`DeviceError` from :meth:`open` if the device cannot be opened.
    """

    def __init__(
        self, pull: Callable[[], np.ndarray], device: int | str | None | bool = None
    ) -> None:
        self.pull = pull
        self.device = device
        self.played = 0
        self.latency_ms = 0.0
        self._stream: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._pacer = RealtimePacer(PLAYBACK_AHEAD_MS)

    def open(self) -> None:
        if self.device is False:
            self._thread = threading.Thread(target=self._clock, name="zmeet playout", daemon=True)
            self._thread.start()
            return
        try:
            import sounddevice as sd
        except OSError as exc:
            raise DeviceError(f"no audio: {exc}") from None
        try:
            self._stream = sd.OutputStream(
                samplerate=SAMPLE_RATE_HZ, channels=CHANNELS, dtype="int16",
                blocksize=FRAME_SAMPLES, device=self.device, callback=self._callback,
            )
            self.latency_ms = float(self._stream.latency) * 1000
            self._stream.start()
        except (sd.PortAudioError, ValueError) as exc:
            self.close()
            raise DeviceError(f"cannot open the speaker {self.device!r}: {exc}") from None

    def _next(self) -> np.ndarray:
        try:
            block = self.pull()
        except Exception:  # never let an error kill the audio thread silently
            log.exception("speaker: pull failed")
            block = np.zeros(FRAME_SAMPLES, np.int16)
        self.played += 1
        return block

    def _callback(self, outdata: np.ndarray, frames: int, time_info: Any, status: Any) -> None:
        self._pacer.wait()
        block = self._next()
        if block.shape[0] != frames:
            block = np.resize(block, frames)
        outdata[:, 0] = block

    def _clock(self) -> None:
        period_s = AUDIO_PTIME_MS / 1000
        next_s = time.monotonic()
        while not self._stop.is_set():
            self._next()
            next_s += period_s
            delay = next_s - time.monotonic()
            if delay < -0.2:
                next_s = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def close(self) -> None:
        """Stop playing. Idempotent; logs, never raises."""
        self._stop.set()
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.abort(ignore_errors=True)
                stream.close(ignore_errors=True)
            except Exception:
                log.exception("speaker: closing failed")
        if self._thread is not None:
            self._thread.join(2.0)
