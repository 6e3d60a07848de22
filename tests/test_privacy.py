"""Private rooms and direct messages (docs/protocol.md 3.16), on a real broker over loopback
with CURVE, people with keys of their own."""

from __future__ import annotations

import subprocess

import pytest
from conftest import is_chat
from proc import ZMEET, start_broker

from zmeet import protocol as p
from zmeet.chat.access import hash_key, key_matches
from zmeet.client.files import FileClient
from zmeet.errors import Refused
from zmeet.protocol import privacy as pp
from zmeet.protocol.files import FileList

pytestmark = pytest.mark.timeout(60)


def refused(code: int, call, *args, **kwargs) -> Refused:
    with pytest.raises(Refused) as caught:
        call(*args, **kwargs)
    assert caught.value.code == code, caught.value
    return caught.value


def is_item(cls):
    return lambda item: isinstance(item, cls)


def test_room_keys_are_stored_hashed_and_checked():
    stored = hash_key("s3cret")
    assert "s3cret" not in stored and key_matches("s3cret", stored)
    assert not key_matches("s3cret ", stored) and not key_matches("", stored)
    assert hash_key("s3cret") != stored  # salted


def test_a_locked_room_lets_in_its_owner_and_invited_nicks_only(connect, wait_for):
    alice, bob, eve = connect("alice"), connect("bob"), connect("eve")
    alice.join("plans")  # its first member owns it
    alice.say("plans", "the plan")
    alice.lock("plans")
    assert "invite-only" in refused(p.ErrorCode.NOT_MEMBER, eve.join, "plans").reason
    # invisible to outsiders: INFO reads as a room nobody ever used
    info = eve.info("plans")
    assert (info.members, info.topic, info.message_count, info.last_seq) == ((), "", 0, 0)
    refused(p.ErrorCode.NOT_MEMBER, eve.history, "plans", 0)
    refused(p.ErrorCode.NOT_MEMBER, eve.lock, "plans", False)  # not an owner
    alice.invite("plans", "bob")
    wait_for(bob, is_item(pp.Invited))
    joined = bob.join("plans")
    assert joined.members == ("alice", "bob")
    assert [e.text for e in joined.history] == ["the plan"]
    assert alice.info("plans").members == ("alice", "bob")


def test_a_keyed_room_asks_its_key(connect):
    alice, bob = connect("alice"), connect("bob")
    alice.join("club")
    alice.set_key("club", "open sesame")
    assert "needs its key" in refused(p.ErrorCode.NOT_MEMBER, bob.join, "club").reason
    assert "wrong key" in refused(p.ErrorCode.NOT_MEMBER, bob.join, "club", key="nope").reason
    assert bob.join("club", key="open sesame").members == ("alice", "bob")
    alice.set_key("club", "")
    connect("carol").join("club")


def test_a_kicked_member_is_out_and_told_and_the_others_see_it(connect, wait_for):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for s in (alice, bob, carol):
        s.join("room")
    refused(p.ErrorCode.NOT_MEMBER, bob.kick, "room", "carol")  # bob owns nothing
    alice.kick("room", "bob", "too loud")
    kicked = wait_for(bob, is_item(pp.Kicked))[-1]
    assert (kicked.room, kicked.by, kicked.reason, kicked.banned) == (
        "room", "alice", "too loud", False)
    assert "room" not in tuple(bob.rooms)
    event = wait_for(carol, lambda e: isinstance(e, p.RoomEvent) and e.type == "kick")[-1]
    assert (event.sender, event.text) == ("bob", "by alice: too loud")
    assert carol.members("room") == ("alice", "carol")
    refused(p.ErrorCode.NOT_MEMBER, bob.say, "room", "still here?")
    refused(p.ErrorCode.BAD_REQUEST, alice.kick, "room", "alice")  # an owner is never kicked
    bob.join("room")  # a kick is not a ban
    alice.say("room", "welcome back")
    wait_for(bob, is_chat("welcome back"))


def test_a_ban_removes_and_keeps_out_until_lifted(connect, wait_for):
    alice, bob = connect("alice"), connect("bob")
    alice.join("room")
    bob.join("room")
    alice.ban("room", "bob")
    assert wait_for(bob, is_item(pp.Kicked))[-1].banned
    assert "banned" in refused(p.ErrorCode.NOT_MEMBER, bob.join, "room").reason
    alice.ban("room", "bob", banned=False)
    assert bob.join("room").members == ("alice", "bob")


def test_an_owner_can_name_another_owner(connect):
    alice, bob, eve = connect("alice"), connect("bob"), connect("eve")
    alice.join("team")
    alice.add_owner("team", "bob")
    bob.join("team")
    bob.lock("team")
    refused(p.ErrorCode.NOT_MEMBER, eve.join, "team")


def test_access_rules_outlive_a_broker_restart(make_broker, connect):
    first = make_broker()
    alice = connect("alice", first)
    alice.join("vault")
    alice.lock("vault")
    alice.close()
    first.stop()
    second = make_broker()  # the same data directory
    refused(p.ErrorCode.NOT_MEMBER, connect("eve", second).join, "vault")
    connect("alice", second).join("vault")  # still its owner


def test_a_private_rooms_files_are_not_listed_to_outsiders(connect, tmp_path):
    alice, eve = connect("alice"), connect("eve")
    alice.join("secret")
    src = tmp_path / "plan.txt"
    src.write_bytes(b"the plan\n")
    FileClient(alice).upload(src, room="secret")
    listed = alice.request(FileList, room="secret", limit=10)
    assert [f.name for f in listed.files] == ["plan.txt"]
    alice.lock("secret")
    assert eve.request(FileList, room="secret", limit=10).files == ()
    assert [f.name for f in alice.request(FileList, room="secret", limit=10).files] == [
        "plan.txt"]


def test_a_direct_message_reaches_only_its_recipient(connect, wait_for):
    alice, bob, carol = connect("alice"), connect("bob"), connect("carol")
    for s in (alice, bob, carol):
        s.join("lobby")
    sent = alice.send_direct("bob", "just for you")
    assert not sent.stored
    got = wait_for(bob, is_item(pp.DirectMessage))[-1]
    assert (got.sender, got.text, got.id) == ("alice", "just for you", sent.id)
    carol.say("lobby", "marker")
    seen = wait_for(carol, is_chat("marker"))
    assert not any(isinstance(i, pp.DirectMessage) for i in seen)
    refused(p.ErrorCode.NOT_FOUND, alice.send_direct, "nobody", "hello?")
    refused(p.ErrorCode.BAD_REQUEST, alice.send_direct, "bob", "   ")


def test_a_direct_message_to_someone_offline_waits_for_them_once(connect, wait_for, person):
    alice, bob = connect("alice"), connect("bob")
    bob.close()
    assert alice.send_direct("bob", "while you were out").stored
    assert alice.send_direct("bob", "and this").stored
    back = connect("bob")
    first = wait_for(back, is_item(pp.DirectMessage))[-1]
    second = wait_for(back, is_item(pp.DirectMessage))[-1]
    assert [first.text, second.text] == ["while you were out", "and this"]
    back.close()
    again = connect("bob")
    again.join("lobby")
    alice.join("lobby")
    alice.say("lobby", "marker")
    seen = wait_for(again, is_chat("marker"))
    assert not any(isinstance(i, pp.DirectMessage) for i in seen)  # delivered once


def test_messages_kept_for_one_offline_nick_are_bounded(connect, monkeypatch):
    from zmeet.broker import privacy
    monkeypatch.setattr(privacy, "MAX_STORED_DIRECTS", 3)
    alice, bob = connect("alice"), connect("bob")
    bob.close()
    for i in range(3):
        alice.send_direct("bob", f"m{i}")
    refused(p.ErrorCode.TOO_MANY, alice.send_direct, "bob", "one too many")


def test_zmeet_say_to_a_nick(tmp_path):
    broker, ready = start_broker(tmp_path / "data", ready=True)
    try:
        common = ["--broker", ready["address"]]
        bob = subprocess.run([*ZMEET, "say", "lobby", "hi", "--nick", "bob", *common],
                             capture_output=True, text=True, timeout=60)
        assert bob.returncode == 0, bob.stderr
        sent = subprocess.run([*ZMEET, "say", "--to", "bob", "psst", "--nick", "alice",
                               "--json", *common], capture_output=True, text=True, timeout=60)
        assert sent.returncode == 0, sent.stderr
        assert '"stored": true' in sent.stdout
        usage = subprocess.run([*ZMEET, "say", "--to", "bob", "a", "b", "--nick", "alice",
                                *common], capture_output=True, text=True, timeout=60)
        assert usage.returncode == 2 and "only TEXT" in usage.stderr
    finally:
        broker.stop()
