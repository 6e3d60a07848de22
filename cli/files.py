"""File sharing on the command line: ``zmeet send``, ``zmeet files``, ``zmeet fetch``, and in
``zmeet join`` the ``/file PATH`` (or the seeds' ``!FILE PATH``), ``/get ID`` and ``/files``
commands, an offer line for each new file, ``--accept-files`` and image preview tiles.

The composition root (:mod:`zmeet_cli.main`) adds :data:`COMMANDS` to its group, gives each
``zmeet join`` terminal a :class:`FilesChat` plugin, and ``zmeet tail`` :data:`RENDERERS`.

Output: a progress bar (tqdm: octets, rate, time left) when stdout is a terminal, none
otherwise; ``--json`` prints one JSON object per line instead (``hashing``, ``start``,
``progress`` at most every PROGRESS_INTERVAL_S, ``done``, ``error``) for scripts.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any

import click
import gevent

from zmeet.client import Session
from zmeet.client.files import FileClient, TransferEvent
from zmeet.errors import BrokerUnavailable, ZmeetError
from zmeet.files import FileError, collect, format_size, parse_size
from zmeet.files.preview import PREVIEW_MAX_BYTES, image_preview, is_previewable
from zmeet.protocol import RoomEvent
from zmeet.protocol import files as pf

from .common import _fail, _open_session, _setup_logging, broker_option, nick_option, timeout_option
from .render import Renderer, render_other, safe
from .terminal import ChatTerminal, Plugin

PROGRESS_INTERVAL_S = 0.25
"""Least time between two ``progress`` JSON events of one transfer."""

PREVIEW_KIND = "image"
"""Viewer tile kind of a shared image's preview (the tile reads ``<sender> image``)."""


def _size_option(text: str | None) -> int | None:
    if text is None:
        return None
    try:
        value = parse_size(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    if value < 1:
        raise click.BadParameter("must be at least 1")
    return value


def _iso(ts_ms: int) -> str:
    ts = datetime.fromtimestamp(ts_ms / 1000, tz=timezone.utc)
    return ts.isoformat(timespec="seconds").replace("+00:00", "Z")


def info_dict(info: pf.FileInfo) -> dict[str, Any]:
    """The JSON object of a file record."""
    return {"id": info.id, "name": info.name, "size": info.size, "sha256": info.sha256,
            "from": info.sender, "room": info.room, "to": info.to, "ts_ms": info.ts_ms,
            "ts": _iso(info.ts_ms)}


def _emit(obj: dict[str, Any]) -> None:
    click.echo(json.dumps(obj, ensure_ascii=False))
    sys.stdout.flush()


class Reporter:
    """Shows one transfer's :class:`TransferEvent` s: JSON lines, a tqdm bar, or nothing."""

    def __init__(self, *, as_json: bool, bar: bool) -> None:
        self.as_json = as_json
        self.bar_wanted = bar and not as_json
        self._bar: Any = None
        self._last_json_s = 0.0

    def __call__(self, ev: TransferEvent) -> None:
        if self.as_json:
            self._json(ev)
        elif self.bar_wanted:
            self._tqdm(ev)

    def _json(self, ev: TransferEvent) -> None:
        now = time.monotonic()
        if ev.kind in ("hashing", "progress"):
            if now - self._last_json_s < PROGRESS_INTERVAL_S and ev.done < ev.size:
                return
        self._last_json_s = now
        obj: dict[str, Any] = {"type": ev.kind, "direction": ev.direction, "file": ev.name,
                               "size": ev.size, "done": ev.done}
        if ev.kind == "start":
            obj["offset"] = ev.offset
        if ev.kind in ("progress", "done"):
            obj["rate_bps"] = round(ev.rate_bps)
            obj["eta_s"] = None if ev.eta_s is None else round(ev.eta_s, 2)
            obj["elapsed_s"] = round(ev.elapsed_s, 3)
        if ev.kind == "done":
            obj["resumed_from"] = ev.offset
            if ev.info is not None:
                obj.update(id=ev.info.id, sha256=ev.info.sha256)
            if ev.path is not None:
                obj["path"] = str(ev.path)
        _emit(obj)

    def _tqdm(self, ev: TransferEvent) -> None:
        from tqdm import tqdm

        if ev.kind == "start":
            self.close()
            self._bar = tqdm(total=ev.size, initial=ev.offset, unit="B", unit_scale=True,
                             unit_divisor=1024, desc=safe(ev.name)[:40], file=sys.stdout,
                             leave=False, dynamic_ncols=True)
        elif ev.kind == "progress" and self._bar is not None:
            self._bar.update(ev.done - self._bar.n)
        elif ev.kind == "done":
            self.close()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _open(broker: str, nick: str, timeout_s: float) -> tuple[Session, FileClient]:
    session = _open_session(broker, nick, timeout_s)
    files = FileClient(session)
    files.start_pump()
    return session, files


# --- zmeet send ----------------------------------------------------------------------------------


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--room", default=None, help="Share with ROOM (you join it).")
@click.option("--to", "to_nick", default=None, help="Send to NICK only (connected now).")
@nick_option
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Progress and results as JSON lines.")
@click.option("--limit-rate", default=None, help="Send at most this many octets a second "
              "(e.g. 10M).")
@click.pass_context
def send(ctx, paths, room, to_nick, nick, broker, connect_timeout_s, as_json, limit_rate) -> None:
    """Share files (a folder: all its files) with a ROOM, or send them to one NICK.

    Each file goes to the broker once, checked against its SHA-256. Sending the same file
    again after an interruption goes on from where it stopped. Exits 1 if a file failed.
    """
    _setup_logging(ctx.obj["log_level"])
    if bool(room) == bool(to_nick):
        raise click.UsageError("give --room ROOM or --to NICK (one of them)")
    rate = _size_option(limit_rate)
    try:
        sources, skipped = collect(list(paths))
    except FileError as exc:
        _fail(exc)
    for note in skipped:
        click.echo(f"zmeet: skipped {note}", err=True)
    session, files = _open(broker, nick, connect_timeout_s)
    status = 0
    try:
        if room:
            session.join(room, history=0)
        for source in sources:
            reporter = Reporter(as_json=as_json, bar=sys.stdout.isatty())
            try:
                info = files.upload(source.path, room=room or "", to=to_nick or "",
                                    name=source.name, on_progress=reporter, limit_rate_bps=rate)
            except ZmeetError as exc:
                reporter.close()
                status = 1
                if as_json:
                    _emit({"type": "error", "file": source.name, "error": str(exc)})
                else:
                    click.echo(f"zmeet: error: {exc}", err=True)
                if isinstance(exc, BrokerUnavailable):
                    break
                continue
            reporter.close()
            if not as_json:
                where = f"#{room}" if room else to_nick
                click.echo(f"sent {safe(info.name)} ({format_size(info.size)}) to {where} "
                           f"as {info.id}")
    except ZmeetError as exc:
        status = 1
        click.echo(f"zmeet: error: {exc}", err=True)
    finally:
        files.stop_pump()
        session.close()
    sys.exit(status)


# --- zmeet files ---------------------------------------------------------------------------------


@click.command("files")
@click.argument("room", required=False)
@nick_option
@broker_option
@timeout_option
@click.option("--direct", is_flag=True, help="Files sent one to one, by you or to you.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per file.")
@click.pass_context
def files_(ctx, room, nick, broker, connect_timeout_s, direct, as_json) -> None:
    """List the files shared with ROOM (or with --direct, those sent to or by you)."""
    _setup_logging(ctx.obj["log_level"])
    if bool(room) == bool(direct):
        raise click.UsageError("give a ROOM or --direct (one of them)")
    session, files = _open(broker, nick, connect_timeout_s)
    try:
        listed = files.list(room or "")
    except ZmeetError as exc:
        session.close()
        _fail(exc)
    files.stop_pump()
    session.close()
    for info in listed:
        if as_json:
            _emit(info_dict(info))
        else:
            who = info.sender + (f" -> {info.to}" if info.to else "")
            click.echo(f"{info.id}  {format_size(info.size):>10}  {_iso(info.ts_ms)}  "
                       f"{who:<16}  {safe(info.name)}")
    if not listed and not as_json:
        click.echo("no files" + (f" in #{room}" if room else " sent to or by you"), err=True)


# --- zmeet fetch ---------------------------------------------------------------------------------


@click.command()
@click.argument("ids", nargs=-1, required=True)
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("."), show_default=True, help="Folder to save into (made if missing).")
@nick_option
@broker_option
@timeout_option
@click.option("--json", "as_json", is_flag=True, help="Progress and results as JSON lines.")
@click.option("--limit-rate", default=None, help="Receive at most this many octets a second "
              "(e.g. 10M).")
@click.pass_context
def fetch(ctx, ids, out_dir, nick, broker, connect_timeout_s, as_json, limit_rate) -> None:
    """Fetch files by ID into --out. An existing file is never replaced (" (1)" is added),
    every file is checked against its SHA-256, and an interrupted fetch goes on from where it
    stopped when run again. Exits 1 if a file failed."""
    _setup_logging(ctx.obj["log_level"])
    rate = _size_option(limit_rate)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot use {out_dir}: {exc.strerror or exc}")
    session, files = _open(broker, nick, connect_timeout_s)
    status = 0
    for file_id in ids:
        reporter = Reporter(as_json=as_json, bar=sys.stdout.isatty())
        try:
            info, path = files.download(file_id, out_dir, on_progress=reporter,
                                        limit_rate_bps=rate)
        except (ZmeetError, OSError) as exc:
            reporter.close()
            status = 1
            text = str(exc) if isinstance(exc, ZmeetError) else f"{exc.strerror or exc}"
            if as_json:
                _emit({"type": "error", "id": file_id, "error": text})
            else:
                click.echo(f"zmeet: error: {text}", err=True)
            if isinstance(exc, BrokerUnavailable):
                break
            continue
        reporter.close()
        if not as_json:
            click.echo(f"saved {safe(info.name)} ({format_size(info.size)}) from {info.sender} "
                       f"to {safe(str(path))} (sha256 verified)")
    files.stop_pump()
    session.close()
    sys.exit(status)


# --- zmeet join ----------------------------------------------------------------------------------

HELP_LINES = [
    "  /file PATH            share a file (a folder: all its files) with the room (also !FILE)",
    "  /get ID [DIR]         save a shared file into DIR (default: here)",
    "  /files                the files shared with this room",
]


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _viewer(term: ChatTerminal) -> Any:
    meeting = getattr(term, "meeting", None)
    return getattr(meeting, "viewer", None) if meeting is not None else None


class FilesChat(Plugin):
    """The files of a ``zmeet join`` terminal: ``/file PATH`` (or the seeds' ``!FILE PATH``),
    ``/get ID [DIR]``, ``/files``; FILE-CHUNK, FILE-ABORT and FILE-OFFER handed to its
    :class:`FileClient`; how a ``file`` event reads (:func:`render_file`); and for each new file
    from someone else, once its line is printed, an offer line or, with ``accept_files``, the
    download, and a preview tile of an image when the meeting window is open.

    One instance per terminal: it keeps that terminal's file client. Transfers run in their
    own greenlets; their errors print ``-- error: ...``."""

    def __init__(self, *, accept_files: bool = False) -> None:
        super().__init__(
            commands={"/file": self.cmd_file, "!file": self.cmd_file, "/get": self.cmd_get,
                      "/files": self.cmd_files},
            item_handlers=[self.on_item],
            event_handlers=[self.on_event],
            help_lines=HELP_LINES,
            renderers=RENDERERS,
        )
        self.accept_files = accept_files
        self._client: FileClient | None = None

    def client(self, term: ChatTerminal) -> FileClient:
        if self._client is None:
            self._client = FileClient(term.session)
        return self._client

    def _spawn(self, term: ChatTerminal, job: Any, *args: Any) -> None:
        def run() -> None:
            try:
                job(term, *args)
            except (ZmeetError, OSError) as exc:
                text = str(exc) if isinstance(exc, ZmeetError) else f"{exc.strerror or exc}"
                term.out(f"-- error: {text}")

        gevent.spawn(run)

    # commands ------------------------------------------------------------------------------

    def cmd_file(self, term: ChatTerminal, rest: str) -> None:
        path = _unquote(rest)
        if not path:
            term.out("-- usage: /file PATH")
            return
        if not term.current:
            term.out("-- in no room: /join ROOM")
            return
        sources, skipped = collect([path])  # FileMissing: "File doesn't exist: PATH"
        for note in skipped:
            term.out(f"-- skipped {safe(note)}")
        self._spawn(term, self._send_all, sources, term.current)

    def _send_all(self, term: ChatTerminal, sources: Any, room: str) -> None:
        for source in sources:
            term.out(f"-- sending {safe(source.name)} ({format_size(source.size)}) to #{room}")
            info = self.client(term).upload(source.path, room=room, name=source.name)
            term.out(f"-- shared {safe(info.name)} as {info.id}")
            if is_previewable(info.name, info.size):
                self._preview_local(term, source.path, info)

    def cmd_get(self, term: ChatTerminal, rest: str) -> None:
        words = rest.split(maxsplit=1)
        if not words:
            term.out("-- usage: /get ID [DIR]")
            return
        folder = Path(_unquote(words[1])) if len(words) > 1 else Path(".")
        self._spawn(term, self._get, words[0], folder)

    def _get(self, term: ChatTerminal, file_id: str, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        info, path = self.client(term).download(file_id, folder)
        term.out(f"-- saved {safe(info.name)} ({format_size(info.size)}) from {info.sender} to "
                 f"{safe(str(path))} (sha256 verified)")

    def cmd_files(self, term: ChatTerminal, rest: str) -> None:
        room = rest.strip() or term.current
        listed = self.client(term).list(room)
        if not listed:
            term.out(f"-- no files in #{room}")
        for info in listed:
            term.out(f"-- {info.id}  {format_size(info.size):>10}  {info.sender:<12} "
                     f"{safe(info.name)}")

    # what arrives --------------------------------------------------------------------------

    def on_item(self, term: ChatTerminal, item: Any) -> bool:
        if self.client(term).dispatch(item):
            return True
        if not isinstance(item, pf.FileOffer):
            return False
        self._offered(term, item.file, "you")
        return True

    def on_event(self, term: ChatTerminal, event: RoomEvent) -> None:
        """A ``file`` event from someone else in one of our rooms, after its line: offer it."""
        fields = file_event_fields(event)
        session = term.session
        if fields is None or event.sender == session.nick or event.room not in session.rooms:
            return
        info = pf.FileInfo(id=fields["id"], name=fields["name"], size=fields["size"],
                           sha256=str(fields.get("sha256", "")), sender=event.sender,
                           room=event.room, ts_ms=event.ts_ms)
        self._offered(term, info, f"#{event.room}")

    def _offered(self, term: ChatTerminal, info: pf.FileInfo, where: str) -> None:
        """Tell ``term`` of a new file from someone else: offer it, fetch it, preview it."""
        about = f"{info.sender} sent {where} {safe(info.name)} ({format_size(info.size)})"
        if self.accept_files:
            term.out(f"-- {about}: fetching it")
            self._spawn(term, self._get, info.id, Path("."))
        else:
            term.out(f"-- {about}: /get {info.id} saves it")
        if is_previewable(info.name, info.size) and _viewer(term) is not None:
            self._spawn(term, self._preview_remote, info)

    # previews ------------------------------------------------------------------------------

    def _show_preview(self, term: ChatTerminal, sender: str, data: bytes) -> None:
        viewer = _viewer(term)
        if viewer is None:
            return
        image = gevent.get_hub().threadpool.apply(image_preview, (data,))
        if image is not None:
            viewer.show(sender, PREVIEW_KIND, image)

    def _preview_remote(self, term: ChatTerminal, info: pf.FileInfo) -> None:
        _, data = self.client(term).fetch_bytes(info.id, max_bytes=PREVIEW_MAX_BYTES)
        self._show_preview(term, info.sender, data)

    def _preview_local(self, term: ChatTerminal, path: Path, info: pf.FileInfo) -> None:
        if _viewer(term) is not None:
            data = gevent.get_hub().threadpool.apply(Path.read_bytes, (path,))
            self._show_preview(term, info.sender, data)


# --- how a file event reads ----------------------------------------------------------------------


def file_event_fields(event: RoomEvent) -> dict[str, Any] | None:
    """The ``{"id", "name", "size", "sha256"}`` of a ``file`` room event, or None if its text
    is not that."""
    if event.type != pf.FILE_EVENT_TYPE:
        return None
    try:
        fields = json.loads(event.text)
    except ValueError:
        return None
    if (not isinstance(fields, dict) or not isinstance(fields.get("id"), str)
            or pf.FILE_ID_PATTERN.fullmatch(fields["id"]) is None
            or not isinstance(fields.get("name"), str) or type(fields.get("size")) is not int
            or fields["size"] < 0):
        return None
    return fields


def render_file(event: RoomEvent) -> str:
    """A ``file`` event: ``* alice shared report.pdf (1.2 MiB) as 3fa2c1e0a1b2``; one whose
    text is not a file's reads as any other event (:func:`zmeet_cli.render.render_other`)."""
    fields = file_event_fields(event)
    if fields is None:
        return render_other(event)
    return (f"* {event.sender} shared {safe(fields['name'])} "
            f"({format_size(fields['size'])}) as {safe(fields['id'])}")


RENDERERS: Mapping[str, Renderer] = MappingProxyType({pf.FILE_EVENT_TYPE: render_file})
"""The renderers the files feature adds, by event type."""

COMMANDS: tuple[click.Command, ...] = (send, files_, fetch)
"""The commands the files feature adds to ``zmeet``."""
