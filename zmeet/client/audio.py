"""Audio on the media lane (docs/protocol.md, 3.9.1 "Audio frames").

:class:`AudioLane` captures the microphone and publishes 20 ms frames of kind ``audio``
(codec ``opus``, or ``pcm`` without PyAV) through a :class:`FrameSender` (the meeting's
:class:`~zmeet.client.media.MediaPublisher`); it decodes what the others send into an
:class:`~zmeet.media.audio.AudioMixer` (a jitter buffer per speaker) that the speaker pulls
from every 20 ms; it writes the mixed audio to a WAV file for ``--record``.

Each participant's media state (muted, video on, screen on) is
:class:`zmeet.protocol.MediaState`; the meeting sends it (:mod:`zmeet.client.media`). This
module imports nothing of the media lane's sockets: the meeting hands it a sender.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Protocol

import gevent
import numpy as np

from .. import protocol as p
from ..clock import SYSTEM_CLOCK, Clock
from ..devices.audio import (
    DEFAULT_OPUS_BITRATE_BPS,
    AudioDecoder,
    AudioEncoder,
    Microphone,
    Speaker,
    WavWriter,
    default_codec,
)
from ..errors import DeviceError, RemoteProtocolError
from ..media.audio import AUDIO_PTIME_MS, FRAME_SAMPLES, AudioMixer, silence

log = logging.getLogger("zmeet.audio")

AUDIO_FPS = 1000 / AUDIO_PTIME_MS
MIXED_WAV = "mixed-audio.wav"
"""File name of the mixed audio in the ``--record`` folder."""


class FrameSender(Protocol):
    """Where the audio lane sends its frames: :meth:`MediaPublisher.send_frame`."""

    def send_frame(self, frame: p.MediaFrame) -> bool:
        """Send one frame ``NOBLOCK``; False if it was dropped (a full queue, or closed)."""
        ...


class AudioLane:
    """Microphone -> encoder -> media lane; media lane -> decoders -> mixer -> speaker.

    ``capture`` opens the microphone (``input_device``); ``playback`` the speaker
    (``output_device``; False: a playout clock without a sound card, which still mixes, for
    ``record_dir`` and tests). ``codec`` is ``opus`` or ``pcm`` (default: opus if PyAV is
    installed). :meth:`on_frame` is the media subscriber's handler for ``audio`` frames.
    ``publisher`` sends the frames (None: receive only). ``clock`` gives the monotonic time
    of playout and the rates and the wall time of audio delays (default the system's).
    Raises :class:`DeviceError` from :meth:`start` if a device or the WAV file cannot be opened.
    """

    def __init__(
        self,
        room: str,
        publisher: FrameSender | None,
        *,
        capture: bool = True,
        input_device: int | str | None = None,
        output_device: int | str | None | bool = None,
        codec: str | None = None,
        bitrate_bps: int = DEFAULT_OPUS_BITRATE_BPS,
        record_dir: str | Path | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.room = room
        self.publisher = publisher
        self.clock = clock
        self.capture = capture
        self.input_device = input_device
        self.output_device = output_device
        self.codec = codec or default_codec()
        self.bitrate_bps = bitrate_bps
        self.record_dir = Path(record_dir) if record_dir is not None else None
        self.mixer = AudioMixer()
        self.muted = False
        self.mic: Microphone | None = None
        self.speaker: Speaker | None = None
        self.wav: WavWriter | None = None
        self.sent = 0
        self.dropped = 0
        self.bytes_sent = 0
        self.received_bytes: dict[str, int] = {}
        self.first_received_s: dict[str, float] = {}
        self.bad = 0
        self._decoders: dict[tuple[str, str], AudioDecoder] = {}
        self._greenlet: gevent.Greenlet | None = None
        self._encoder: AudioEncoder | None = None

    def start(self) -> None:
        if self.record_dir is not None:
            self.record_dir.mkdir(parents=True, exist_ok=True)
        self.speaker = Speaker(self._pull, self.output_device)
        self.speaker.open()
        self.mixer.output_latency_ms = self.speaker.latency_ms
        if self.capture:
            if self.publisher is None:
                raise ValueError("capturing audio needs a publisher")
            self._encoder = AudioEncoder(self.codec, self.bitrate_bps)
            self.mic = Microphone(self.input_device)
            self.mic.open()
            self._greenlet = gevent.spawn(self._publish_loop)

    def _pull(self) -> np.ndarray:
        # the speaker's thread (PortAudio's callback or the playout clock): no gevent here
        mixed = self.mixer.pull(self.clock.monotonic_s(), self.clock.wall_us()).mixed
        if self.wav is None and self.record_dir is not None and self.mixer.buffers:
            try:  # created with the first audio received, like the video files
                self.wav = WavWriter(self.record_dir / MIXED_WAV)
            except DeviceError as exc:
                log.error("recording audio: %s", exc)
                self.record_dir = None
        if self.wav is not None:
            self.wav.write(mixed)
        return mixed

    def _publish_loop(self) -> None:
        assert self.mic is not None and self._encoder is not None and self.publisher is not None
        seq = 0
        first_us: int | None = None
        while True:
            for capture_ts_us, block in self.mic.read():
                if first_us is None:
                    first_us = capture_ts_us
                if self.muted:
                    continue
                if block.shape[0] != FRAME_SAMPLES:
                    block = np.resize(block, FRAME_SAMPLES)
                payload = self._encoder.encode(block)
                frame = p.MediaFrame(
                    room=self.room, kind="audio", seq=seq, capture_ts_us=capture_ts_us,
                    pts_ms=(capture_ts_us - first_us) // 1000, width=0, height=0,
                    fps=AUDIO_FPS, codec=self.codec, payload=payload,
                )
                if self.publisher.send_frame(frame):
                    seq += 1
                    self.sent += 1
                    self.bytes_sent += len(payload)
                else:
                    self.dropped += 1

    def on_frame(self, frame: p.MediaFrame) -> None:
        """Decode an ``audio`` frame and queue it in its sender's jitter buffer (on the hub)."""
        key = (frame.sender, frame.codec)
        decoder = self._decoders.get(key)
        if decoder is None:
            try:
                decoder = self._decoders[key] = AudioDecoder(frame.codec)
            except (ValueError, DeviceError):
                self.bad += 1
                return
        try:
            block = decoder.decode(frame.payload)
        except RemoteProtocolError:
            self.bad += 1
            return
        if block.shape[0] != FRAME_SAMPLES:
            block = np.resize(block, FRAME_SAMPLES) if block.size else silence()
        self.received_bytes[frame.sender] = (
            self.received_bytes.get(frame.sender, 0) + len(frame.payload)
        )
        self.first_received_s.setdefault(frame.sender, self.clock.monotonic_s())
        self.mixer.push(frame.sender, frame.seq, frame.capture_ts_us, block)

    def remove(self, sender: str) -> None:
        self.mixer.remove(sender)
        for key in [k for k in self._decoders if k[0] == sender]:
            del self._decoders[key]

    def stop(self) -> None:
        """Stop capture, playback and the WAV file. Idempotent; never raises."""
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=2)
        if self.mic is not None:
            self.mic.close()
        if self.speaker is not None:
            self.speaker.close()
        if self.wav is not None:
            self.wav.close()

    def stats(self) -> dict[str, Any]:
        now = self.clock.monotonic_s()
        bitrate = {}
        for sender, n in self.received_bytes.items():
            span = max(1e-3, now - self.first_received_s[sender])
            bitrate[sender] = round(n * 8 / span)
        return {
            "codec": self.codec,
            "bitrate_bps": self._encoder.bitrate_bps if self._encoder else None,
            "sent": self.sent,
            "dropped": self.dropped,
            "bytes_sent": self.bytes_sent,
            "mic_dropped": self.mic.dropped if self.mic else 0,
            "played": self.speaker.played if self.speaker else 0,
            "received_bitrate_bps": bitrate,
            "jitter": self.mixer.stats(),
            "bad": self.bad,
            "wav": str(self.wav.path) if self.wav else None,
        }
