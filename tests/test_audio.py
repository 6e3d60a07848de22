"""Audio: the jitter buffer, mixing and the active speaker without sockets; the codecs; and
speech in, speech out through two real ``zmeet join --audio`` processes, a broker and ALSA's
file plugin: an ``.asoundrc`` in a HOME of its own makes the default device read and write raw
files (``_alsa_home``).

Nothing sleeps to wait: the processes are waited for (they leave by themselves after
``--duration``), bounded in time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest
from proc import ZMEET, Proc, start_broker
from testmedia import speech_wav

from zmeet import protocol as p
from zmeet.devices.audio import AudioDecoder, AudioEncoder, RealtimePacer, opus_available
from zmeet.errors import RemoteProtocolError
from zmeet.media.audio import (
    FRAME_SAMPLES,
    MAX_SYNC_DELAY_MS,
    SAMPLE_RATE_HZ,
    ActiveSpeaker,
    AudioMixer,
    level_dbfs,
    mix,
    video_due_us,
)
from zmeet.media.jitter import DelayLine, JitterBuffer
from zmeet.protocol import MAX_STATE_BYTES, MediaState

LEAD_SILENCE_S = 1.0  # before the speech, so that both sides are connected when it starts


def tone(freq_hz: float, amplitude: int, n: int = FRAME_SAMPLES, start: int = 0) -> np.ndarray:
    t = (np.arange(n) + start) / SAMPLE_RATE_HZ
    return (np.sin(2 * np.pi * freq_hz * t) * amplitude).astype(np.int16)


# --- pure -------------------------------------------------------------------------------------


def test_jitter_buffer_reorders_waits_for_target_and_conceals_gaps() -> None:
    buf = JitterBuffer(target_frames=3, max_frames=6)
    blocks = {i: np.full(FRAME_SAMPLES, i, np.int16) for i in range(8)}
    buf.push(1, 1_000, blocks[1])
    buf.push(0, 0, blocks[0])
    assert buf.pop() is None  # buffering: 2 of 3
    buf.push(3, 3_000, blocks[3])  # 2 is missing
    assert buf.pop()[0] == 0 and buf.pop()[0] == 1
    assert buf.pop() is None and buf.stats.concealed == 1  # the gap plays as silence
    assert buf.push(2, 2_000, blocks[2]) is False and buf.stats.late == 1
    assert buf.pop()[0] == 3 and buf.played_capture_ts_us == 3_000


def test_jitter_buffer_overflow_drops_oldest_so_delay_stays_bounded() -> None:
    buf = JitterBuffer(target_frames=2, max_frames=4)
    for seq in range(10):
        buf.push(seq, seq, np.full(FRAME_SAMPLES, seq, np.int16))
    assert len(buf) <= 4 and buf.stats.overflow >= 6
    assert buf.pop()[0] >= 10 - 4  # at most max_frames behind the newest, never a backlog


def test_jitter_buffer_follows_a_sender_that_restarts_numbering() -> None:
    buf = JitterBuffer(target_frames=1, max_frames=4)
    for seq in range(100, 103):
        buf.push(seq, 0, np.zeros(FRAME_SAMPLES, np.int16))
        buf.pop()
    assert buf.push(0, 0, np.ones(FRAME_SAMPLES, np.int16))
    assert buf.pop()[0] == 1


def test_mix_sums_and_clips_and_levels() -> None:
    loud = np.full(FRAME_SAMPLES, 30_000, np.int16)
    assert mix([loud, loud]).max() == 32767
    assert mix([]).any() == False  # noqa: E712
    assert level_dbfs(np.zeros(FRAME_SAMPLES, np.int16)) < -100
    assert -4 < level_dbfs(tone(440, 32767)) < -2  # a full-scale sine is -3 dBFS


def test_mixer_mixes_every_speaker_and_finds_the_active_one() -> None:
    mixer = AudioMixer(target_frames=1, max_frames=8)
    for seq in range(5):
        mixer.push("alice", seq, 1_000_000 + seq * 20_000, tone(440, 12_000, start=seq * 960))
        mixer.push("bob", seq, 1_000_000 + seq * 20_000, tone(300, 300, start=seq * 960))
    out = [mixer.pull(now_s=seq * 0.02, now_us=1_080_000 + seq * 20_000) for seq in range(5)]
    assert set(out[-1].levels) == {"alice", "bob"}
    assert out[-1].active == "alice"
    expected = mix([tone(440, 12_000, start=4 * 960), tone(300, 300, start=4 * 960)])
    assert np.array_equal(out[-1].mixed, expected)
    assert mixer.audio_delay_ms("alice") == pytest.approx(80.0)
    mixer.remove("alice")
    assert mixer.audio_delay_ms("alice") is None


def test_active_speaker_changes_to_the_loudest_recent_one() -> None:
    s = ActiveSpeaker()
    for i in range(20):
        s.observe("alice", -20.0, i * 0.02)
        s.observe("bob", -60.0, i * 0.02)
    assert s.current(0.4) == "alice"
    for i in range(20, 200):
        s.observe("alice", -90.0, i * 0.02)
        s.observe("bob", -25.0, i * 0.02)
    assert s.current(4.0) == "bob"
    assert s.last_spoke_s("bob") == pytest.approx(199 * 0.02)


def test_delay_line_releases_the_newest_due_frame() -> None:
    line: DelayLine[int] = DelayLine(max_items=3)
    for i in range(5):
        line.push(i, due_s=1.0 + i * 0.033)
    assert line.dropped == 2 and line.next_due_s() == pytest.approx(1.066)
    assert line.pop_due(1.0) is None
    assert line.pop_due(1.2) == 4 and line.dropped == 4


def test_video_is_held_to_its_audio_delay_but_never_too_long() -> None:
    assert video_due_us(1_000_000, None, 1_010_000) == 1_010_000
    assert video_due_us(1_000_000, 80.0, 1_010_000) == 1_080_000
    capped = video_due_us(1_000_000, 5_000.0, 1_010_000)
    assert capped == 1_000_000 + MAX_SYNC_DELAY_MS * 1000


def test_media_state_round_trip_and_junk() -> None:
    state = MediaState(audio=True, muted=True, video=False, screen=True)
    assert MediaState.decode(state.encode()) == state
    for junk in (b"", b"[1]", b"x" * 1000, b"\xff"):
        with pytest.raises(RemoteProtocolError):
            MediaState.decode(junk)


def test_media_state_travels_as_a_state_frame() -> None:
    """docs/protocol.md 3.9.2: compact JSON in field order, codec json, no picture, and a
    missing key or a non-true value reads as false."""
    state = MediaState(audio=True, muted=False, video=True, screen=False)
    frame = state.frame("room", 7, 1_700_000_000_000_000)
    assert frame.payload == b'{"audio":true,"muted":false,"video":true,"screen":false}'
    assert (frame.kind, frame.codec, frame.seq, frame.capture_ts_us) == (
        "state", "json", 7, 1_700_000_000_000_000)
    assert (frame.width, frame.height, frame.pts_ms, frame.fps) == (0, 0, 0, 0.0)
    assert MediaState.decode(p.encode(frame)[-1]) == state
    assert MediaState.decode(b'{"muted": 1, "video": true}') == MediaState(video=True)
    assert len(MediaState(True, True, True, True).encode()) <= MAX_STATE_BYTES


@pytest.mark.parametrize("codec", ["pcm", "opus"])
def test_codec_round_trip_keeps_the_waveform(codec: str) -> None:
    if codec == "opus" and not opus_available():
        pytest.fail("PyAV with libopus is a dependency of the opus codec: pip install av")
    enc, dec = AudioEncoder(codec), AudioDecoder(codec)
    src = np.concatenate([tone(440, 8000, start=i * 960) for i in range(50)])
    out = np.concatenate([dec.decode(enc.encode(src[i * 960:(i + 1) * 960])) for i in range(50)])
    assert out.shape == src.shape
    payload = len(enc.encode(src[:960]))
    if codec == "pcm":
        assert np.array_equal(out, src) and payload == 1920
    else:
        assert payload < 200  # 32 kbit/s: 80 octets per 20 ms, plus some
        lag = int(np.argmax(np.correlate(out[4800:9600].astype(float),
                                         src[4800:5760].astype(float), "valid")))
        seg = out[4800 + lag: 4800 + lag + 960].astype(float)
        ref = src[4800:5760].astype(float)
        assert np.dot(seg, ref) / np.sqrt(np.dot(seg, seg) * np.dot(ref, ref)) > 0.9
    with pytest.raises(RemoteProtocolError):
        dec.decode(b"\x01") if codec == "pcm" else dec.decode(b"\xff" * 3)


def test_realtime_pacer_holds_an_unclocked_device_to_the_wall_clock() -> None:
    now = [0.0]
    pacer = RealtimePacer(ahead_ms=0.0, clock=lambda: now[0])
    pacer.wait()  # the first block sets the schedule
    # the 2nd block comes at once: it must wait ~20 ms (we do not let it sleep: clock moved)
    now[0] = 0.02
    pacer.wait()
    assert pacer.waited == 0
    now[0] = 1.0  # a stall: the schedule restarts, no burst of waits afterwards
    pacer.wait()
    now[0] = 1.02
    pacer.wait()
    assert pacer.waited == 0


# --- speech in, speech out -------------------------------------------------------------------


def _alsa_home(folder: Path, mic_raw: Path | str) -> Path:
    """A HOME with an .asoundrc whose default device reads ``mic_raw`` and writes
    ``folder/speaker.raw`` (ALSA does not expand variables: real paths)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".asoundrc").write_text(
        'pcm.!default { type asym  playback.pcm "speaker"  capture.pcm "mic" }\n'
        f'pcm.speaker  {{ type file  slave.pcm "null"  file "{folder}/speaker.raw"  '
        'format "raw" }\n'
        f'pcm.mic      {{ type file  slave.pcm "null"  file "/dev/null"  infile "{mic_raw}"  '
        'format "raw" }\n'
    )
    return folder


def _read_wav(path: Path) -> np.ndarray:
    with wave.open(str(path), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (SAMPLE_RATE_HZ, 1, 2)
        return np.frombuffer(w.readframes(w.getnframes()), "<i2")


def _best_match(heard: np.ndarray, spoken: np.ndarray) -> tuple[float, int]:
    """Normalised cross-correlation peak of ``spoken`` inside ``heard`` (at 8 kHz, by FFT):
    ``(coefficient, lag in samples at 48 kHz)``. Allows any delay and gain."""
    step = 6  # 48 kHz -> 8 kHz (speech energy is below 4 kHz; a plain decimation is enough here)
    a = heard[::step].astype(np.float64)
    b = spoken[::step].astype(np.float64)
    n = 1 << int(np.ceil(np.log2(len(a) + len(b))))
    corr = np.fft.irfft(np.fft.rfft(a, n) * np.conj(np.fft.rfft(b, n)), n)[: len(a)]
    lag = int(np.argmax(corr))
    seg = a[lag: lag + len(b)]
    ref = b[: len(seg)]
    coef = float(np.dot(seg, ref) / np.sqrt(np.dot(seg, seg) * np.dot(ref, ref) + 1e-9))
    return coef, lag * step


@pytest.mark.media
def test_speech_in_speech_out_through_two_zmeet_processes(tmp_path: Path) -> None:
    """alice speaks speech-en.wav into her microphone; what bob's speaker played, and the
    mixed audio bob recorded, match it by cross-correlation."""
    assert shutil.which("sox"), "sox is needed (make test installs it)"
    speech_raw = tmp_path / "speech.raw"
    subprocess.run(
        ["sox", str(speech_wav()), "-r", "48000", "-c", "1", "-b", "16", "-e", "signed-integer",
         "-t", "raw", str(speech_raw), "pad", str(LEAD_SILENCE_S), "2"],
        check=True, timeout=60,
    )
    spoken = np.fromfile(speech_raw, "<i2")[int(LEAD_SILENCE_S * SAMPLE_RATE_HZ):]
    alice_home = _alsa_home(tmp_path / "alice", speech_raw)
    bob_home = _alsa_home(tmp_path / "bob", "/dev/zero")  # bob keeps quiet
    broker, endpoints = start_broker(tmp_path / "data")
    procs = [broker]
    try:
        join = [*ZMEET, "join", "meet", "--broker", endpoints["entry"], "--no-display",
                "--audio", "--stats"]
        env = {"DISPLAY": ""}
        bob = Proc([*join, "--nick", "bob", "--record", str(tmp_path / "rec"),
                    "--duration", "60"], stdin=True, env={**env, "HOME": str(bob_home)})
        procs.append(bob)
        bob.expect(r"^-- joined #meet as bob", timeout_s=30)
        duration_s = LEAD_SILENCE_S + len(spoken) / SAMPLE_RATE_HZ + 2.5
        alice = Proc([*join, "--nick", "alice", "--duration", str(duration_s)], stdin=True,
                     env={**env, "HOME": str(alice_home)})
        procs.append(alice)
        alice.expect(r"^-- joined #meet as alice", timeout_s=30)
        assert alice.wait(timeout_s=duration_s + 30) == 0, alice.stderr[-20:]
        bob.stop()
        stats = json.loads(next(line for line in reversed(bob.stderr)
                                if line.startswith('{"type": "stats"')))
        alice_stats = json.loads(next(line for line in reversed(alice.stderr)
                                      if line.startswith('{"type": "stats"')))
    finally:
        for proc in reversed(procs):
            proc.stop()
    audio = stats["audio"]
    assert alice_stats["audio"]["sent"] >= len(spoken) / FRAME_SAMPLES
    assert stats["received"]["alice"]["audio"]["frames"] >= len(spoken) / FRAME_SAMPLES
    assert audio["jitter"]["alice"]["played"] >= len(spoken) / FRAME_SAMPLES * 0.95
    heard = np.fromfile(bob_home / "speaker.raw", "<i2")
    coef, lag = _best_match(heard, spoken)
    print(f"speaker: correlation {coef:.3f} at {lag / SAMPLE_RATE_HZ:.3f} s; "
          f"codec {audio['codec']} {audio['received_bitrate_bps']} bit/s received; "
          f"jitter {audio['jitter']['alice']}")
    assert coef > 0.6, (coef, lag)
    recorded = _read_wav(tmp_path / "rec" / "mixed-audio.wav")
    coef_rec, _ = _best_match(recorded, spoken)
    assert coef_rec > 0.6, coef_rec
