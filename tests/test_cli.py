"""The CLI as a user runs it: click's CliRunner for arguments, real subprocesses for the rest."""

from __future__ import annotations

import ast
import json
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from proc import REPO, ZMEET, Proc, start_broker
from zmeet_cli.main import main

pytestmark = pytest.mark.timeout(90)


@pytest.fixture
def broker(tmp_path):
    proc, endpoints = start_broker(tmp_path / "data")
    yield endpoints["entry"]
    proc.stop()


def zmeet(*args: str, broker: str | None = None, stdin: bool = False) -> Proc:
    extra = ["--broker", broker] if broker else []
    return Proc([*ZMEET, *args, *extra], stdin=stdin)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_help_lists_every_command():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("broker", "join", "say", "tail"):
        assert command in result.output


EXPECTED_COMMANDS = {"broker", "say", "tail", "join", "ttt", "guess", "games", "send", "files",
                     "fetch", "keys", "bench"}


def listed_commands(help_text: str) -> set[str]:
    """The command names of a click group's ``--help`` (its "Commands:" section)."""
    lines = help_text.splitlines()
    start = lines.index("Commands:") + 1
    return {line.split()[0] for line in lines[start:] if line.startswith("  ") and line.strip()}


def test_the_module_and_the_script_offer_the_same_commands():
    script = Path(sys.executable).with_name("zmeet")
    runs = {
        "python -m zmeet_cli": [sys.executable, "-m", "zmeet_cli", "--help"],
        "zmeet": [str(script), "--help"],
        "python -m zmeet_cli.main": [*ZMEET, "--help"],
    }
    offered = {}
    for name, args in runs.items():
        done = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, (name, done.stderr)
        offered[name] = listed_commands(done.stdout)
    assert offered["python -m zmeet_cli"] == offered["zmeet"] == EXPECTED_COMMANDS
    assert offered["python -m zmeet_cli.main"] == EXPECTED_COMMANDS


def test_the_cli_package_has_no_import_circles():
    """Every import between modules of cli/ (TYPE_CHECKING and function-level ones too) goes
    one way: the composition root imports the features, never the other way round."""
    package = REPO / "cli"
    modules = {path.stem for path in package.glob("*.py")}
    graph: dict[str, set[str]] = {}
    for path in package.glob("*.py"):
        edges = graph.setdefault(path.stem, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 1 and node.module:
                    edges.add(node.module.split(".")[0])
                elif node.level == 1:
                    edges.update(alias.name for alias in node.names)
                elif node.module and node.module.startswith("zmeet_cli."):
                    edges.add(node.module.split(".")[1])
                elif node.module == "zmeet_cli":
                    edges.update(alias.name for alias in node.names)
            elif isinstance(node, ast.Import):
                edges.update(alias.name.split(".")[1] for alias in node.names
                             if alias.name.startswith("zmeet_cli."))
        edges &= modules
    importers_of_root = {m for m, deps in graph.items() if "main" in deps}
    assert importers_of_root <= {"__main__"}, importers_of_root

    def visit(module: str, path: list[str]) -> None:
        for dep in sorted(graph[module]):
            assert dep not in [*path, module], f"import circle: {' -> '.join([*path, module, dep])}"
            visit(dep, [*path, module])

    for module in sorted(graph):
        visit(module, [])
    assert graph["main"] >= {"bench", "broker", "chat", "files", "games"}


def recording_plugin(word: str, event_type: str = "poll"):
    """A chat terminal plugin with one command, one line, item and event handler, one help
    line and a renderer for ``event_type``; returns it and the list of what reached it."""
    from zmeet_cli.terminal import Plugin

    seen: list = []
    plugin = Plugin(
        commands={word: lambda term, rest: seen.append(("command", rest))},
        line_handlers=[lambda term, line: line == "42" and not seen.append(("line", line))],
        item_handlers=[lambda term, item: isinstance(item, int)
                       and not seen.append(("item", item))],
        event_handlers=[lambda term, event: seen.append(("event", event.type))],
        help_lines=[f"  {word}  does things"],
        renderers={event_type: lambda event: f"* {event.sender} polls: {event.text}"},
    )
    return plugin, seen


def test_the_chat_terminal_takes_plugins_as_instances():
    from types import SimpleNamespace

    import gevent.event
    from zmeet_cli.terminal import ChatTerminal

    from zmeet.protocol import RoomEvent

    lines: list[str] = []
    (first, first_seen), (second, second_seen) = (recording_plugin("/poll"),
                                                  recording_plugin("/vote", "vote"))
    session = SimpleNamespace(rooms=("lobby",), nick="me")  # no request is made
    term = ChatTerminal(session, "lobby", gevent.event.Event(), plugins=[first, second],
                        out=lines.append)
    term.handle("/POLL  tea or coffee ")
    term.handle("42")
    term.handle("/help")
    assert first_seen == [("command", "tea or coffee"), ("line", "42")]
    assert lines[-1].splitlines()[-2:] == ["  /poll  does things", "  /vote  does things"]
    term.dispatch(7)
    term.dispatch(RoomEvent(room="lobby", seq=1, id="a", ts_ms=0, type="poll", sender="bob",
                            text="tea?"))
    assert lines[-1].endswith("] * bob polls: tea?")
    assert first_seen[-2:] == [("item", 7), ("event", "poll")] and ("item", 7) not in second_seen
    other = ChatTerminal(session, "lobby", gevent.event.Event(),
                         plugins=[recording_plugin("/x")[0]], out=lines.append)
    other.dispatch(RoomEvent(room="lobby", seq=2, id="b", ts_ms=0, type="vote", sender="bob",
                             text="yes"))
    assert lines[-1].endswith("] * bob vote yes")  # the renderers are the terminal's own
    with pytest.raises(ValueError, match="/poll"):
        ChatTerminal(session, "lobby", gevent.event.Event(),
                     plugins=[recording_plugin("/poll")[0], recording_plugin("/poll", "vote")[0]])


def test_nick_is_required():
    result = CliRunner().invoke(main, ["say", "lobby", "hi"], env={"ZMEET_NICK": None})
    assert result.exit_code == 2
    assert "--nick" in result.output


def test_bad_bind_endpoint_is_a_usage_error():
    result = CliRunner().invoke(main, ["broker", "--bind", "udp://nowhere"])
    assert result.exit_code == 2
    assert "--bind" in result.output


def test_unreachable_broker_fails_with_a_clear_error():
    proc = zmeet("say", "lobby", "hello", "--nick", "alice", "--connect-timeout", "1",
                 broker=f"tcp://127.0.0.1:{free_port()}")
    assert proc.wait(timeout_s=15) == 1
    assert "no answer from the broker" in "\n".join(proc.stderr)


def test_broker_address_in_use_fails_cleanly(tmp_path, broker):
    proc = Proc([*ZMEET, "broker", "--bind", broker, "--data-dir", str(tmp_path / "other")])
    assert proc.wait(timeout_s=15) == 1
    assert "cannot start the broker" in "\n".join(proc.stderr)


def test_say_then_tail_json_with_history(broker):
    assert zmeet("say", "lobby", "first words", "--nick", "alice", broker=broker).wait() == 0
    tail = zmeet("tail", "lobby", "--nick", "watcher", "--json", "--history", "5",
                 "--count", "4", "--timeout", "30", broker=broker)
    first = json.loads(tail.expect(r"first words").string)
    assert first["type"] == "chat" and first["from"] == "alice" and first["history"] is True
    assert {"type", "room", "seq", "from", "text", "ts"} <= first.keys()
    assert zmeet("say", "lobby", "héllo wörld ✓", "--nick", "alice", broker=broker).wait() == 0
    assert tail.wait() == 0
    events = [json.loads(line) for line in tail.stdout]
    assert [e["type"] for e in events] == ["chat", "join", "chat", "leave"]
    assert events[2]["text"] == "héllo wörld ✓"
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 4


def test_tail_times_out_without_enough_events(broker):
    tail = zmeet("tail", "quiet", "--nick", "watcher", "--count", "1", "--timeout", "0.5",
                 broker=broker)
    assert tail.wait() == 1
    assert "timed out" in "\n".join(tail.stderr)


def test_a_nick_is_its_keys_another_key_is_refused_and_its_own_says_beside_join(broker,
                                                                                tmp_path):
    holder = zmeet("join", "lobby", "--nick", "alice", "--no-display", stdin=True, broker=broker)
    holder.expect(r"joined #lobby as alice")
    other = str(tmp_path / "mallory.key_secret")
    refused = zmeet("say", "lobby", "I am alice too", "--nick", "alice", "--identity", other,
                    broker=broker)
    assert refused.wait() == 1
    assert "registered to another key" in "\n".join(refused.stderr)
    beside = zmeet("say", "lobby", "from my other terminal", "--nick", "alice", broker=broker)
    assert beside.wait() == 0, beside.stderr
    holder.expect(r"<alice> from my other terminal")
    holder.send("still here")
    holder.expect(r"<alice> still here")
    holder.send("/quit")
    assert holder.wait() == 0
    assert not any("I am alice too" in line for line in holder.stdout)
    # the second terminal's JOIN and BYE were no join or leave of alice's
    assert not any("* alice joined" in line or "* alice left" in line
                   for line in holder.stdout), holder.stdout


def test_oversize_message_is_refused_not_truncated(broker):
    proc = zmeet("say", "lobby", "é" * 2049, "--nick", "alice", broker=broker)  # 4098 bytes
    assert proc.wait() == 1
    assert "4096" in "\n".join(proc.stderr)
    tail = zmeet("tail", "lobby", "--nick", "w", "--json", "--history", "50", "--timeout", "1",
                 broker=broker)
    assert tail.wait() == 0
    assert not [line for line in tail.stdout if '"chat"' in line]


def test_invalid_nick_is_refused(broker):
    proc = zmeet("say", "lobby", "hi", "--nick", "not a nick", broker=broker)
    assert proc.wait() == 1
    assert "invalid nick" in "\n".join(proc.stderr)


def test_two_people_chat_interactively(broker):
    alice = zmeet("join", "--nick", "alice", "--no-display", stdin=True, broker=broker)
    alice.expect(r"joined #lobby as alice")
    bob = zmeet("join", "--nick", "bob", "--no-display", stdin=True, broker=broker)
    bob.expect(r"joined #lobby as bob")
    alice.expect(r"\* bob joined")
    alice.send("hello bob")
    bob.expect(r"<alice> hello bob")
    alice.expect(r"<alice> hello bob")
    bob.send("!INFO")
    info = bob.expect(r"^-- #lobby: 2 here").string
    assert "alice" in info and "1 messages" in info
    bob.send("/join games")
    bob.expect(r"joined #games")
    bob.send("/help")
    bob.expect(r"/quit")
    alice.send("!DISCONNECT")
    assert alice.wait() == 0
    bob.expect(r"#lobby \* alice left \(quit\)")
    bob.close_stdin()  # Ctrl-D
    assert bob.wait() == 0
    assert sum("hello bob" in line for line in alice.stdout) == 1  # shown once to its sender


def test_history_survives_a_broker_restart(tmp_path):
    data = tmp_path / "data"
    first, endpoints = start_broker(data)
    for text in ("one", "two", "three"):
        assert zmeet(
            "say", "lobby", text, "--nick", "alice", broker=endpoints["entry"]
        ).wait() == 0
    first.signal(signal.SIGTERM)
    assert first.wait() == 0
    second, endpoints = start_broker(data)
    try:
        tail = zmeet("tail", "lobby", "--nick", "bob", "--json", "--history", "50",
                     "--count", "3", "--timeout", "20", broker=endpoints["entry"])
        assert tail.wait() == 0
        assert [json.loads(line)["text"] for line in tail.stdout] == ["one", "two", "three"]
    finally:
        second.stop()


def test_a_killed_client_is_announced_gone(broker):
    assert zmeet("say", "lobby", "marker", "--nick", "alice", broker=broker).wait() == 0
    watcher = zmeet("tail", "lobby", "--nick", "watcher", "--json", "--history", "1",
                    "--timeout", "60", broker=broker)
    watcher.expect(r"marker")  # printed after JOINED: the watcher is in the room
    victim = zmeet("join", "--nick", "victim", "--no-display", stdin=True, broker=broker)
    victim.expect(r"joined #lobby as victim")
    watcher.expect(r'"type": "join".*"from": "victim"')
    victim.signal(signal.SIGKILL)
    victim.wait()
    gone = json.loads(watcher.expect(r'"type": "gone"', timeout_s=15).string)
    assert gone["from"] == "victim"
    watcher.signal(signal.SIGINT)
    assert watcher.wait() == 0


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_broker_stops_cleanly_on_signals(tmp_path, sig):
    proc, _ = start_broker(tmp_path / "data")
    proc.signal(sig)
    assert proc.wait() == 0
    assert "broker stopped" in "\n".join(proc.stderr)


def test_join_leaves_by_itself_after_duration(broker):
    proc = zmeet("join", "room-1", "--nick", "timed", "--no-display", "--duration", "0.5",
                 broker=broker)
    assert proc.wait() == 0
    assert any("joined #room-1" in line for line in proc.stdout)
