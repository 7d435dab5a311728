"""A replay's swap interleaved with live applies never loses an event (SPEC §7).

The live projector and a replay are driven step by step, in any order: a
projector batch read but not yet applied, a rebuild, the shadow catching up,
a swap attempt. Whatever the interleaving, once the live projector has
caught up its projection equals a clean rebuild of the log, and the live
checkpoint never moves backwards.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from billhook.config import Settings
from billhook.domain.records import EventRecord, StoredEvent
from billhook.log.sqlite import EventLog
from billhook.projections.projector import catch_up
from billhook.projections.rebuild import rebuild, swap_in
from billhook.projections.store import ProjectionStore
from billhook.providers.decode import PROJECTED_TYPES
from billhook.providers.stripe.webhook import stripe_record
from billhook.testing.settings import make_settings
from billhook.testing.stripe import stripe_event_body, stripe_subscription
from tests.feed import T0, digest

STATUSES = ["trialing", "active", "past_due", "canceled"]


def _records(count: int, seed: int) -> list[EventRecord]:
    """Subscription events over a few workspaces, each with a distinct id."""
    rng = random.Random(seed)
    records = []
    for n in range(count):
        k = rng.randrange(6)
        sub = stripe_subscription(
            id=f"sub_{k}",
            customer=f"cus_{k}",
            status=rng.choice(STATUSES),
            metadata={"workspace_id": f"ws_{k % 4}"},
        )
        body = stripe_event_body(
            "customer.subscription.updated", event_id=f"evt_{seed}_{n}", obj=sub, created=T0 + n
        )
        records.append(stripe_record(body.decode()))
    return records


@dataclass
class World:
    """A log, a live store, maybe a shadow, and the live projector's batches in flight."""

    directory: Path
    settings: Settings
    pool: list[EventRecord]
    log: EventLog = field(init=False)
    live: ProjectionStore = field(init=False)
    shadow: ProjectionStore | None = None
    in_flight: list[tuple[int, list[StoredEvent]]] = field(default_factory=list)
    shadows: int = 0
    checkpoints: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log = EventLog(self.settings.events_path)
        self.live = ProjectionStore(self.settings.projections_path, self.settings)

    def step(self, action: str, size: int) -> None:
        if action == "append" and self.pool:
            taken, self.pool = self.pool[:size], self.pool[size:]
            self.log.append_batch(taken)
        elif action == "read":
            after = self.live.checkpoint()
            events = self.log.read(after=after, limit=size, payloads_of=PROJECTED_TYPES)
            if events:
                self.in_flight.append((after, events))
        elif action == "apply" and self.in_flight:
            after, events = self.in_flight.pop(0)
            self.live.apply(events, after=after)
        elif action == "rebuild":
            self.close_shadow()
            self.shadows += 1
            path = self.directory / f"shadow-{self.shadows}.db"
            rebuild(self.log, path, self.settings)
            self.shadow = ProjectionStore(path, self.settings)
        elif action == "shadow" and self.shadow is not None:
            catch_up(self.log, self.shadow, batch_size=size)
        elif action == "swap" and self.shadow is not None:
            self.shadow.copy_over(self.settings.projections_path)
        elif action == "replay" and self.shadow is not None:
            swap_in(self.shadow, self.settings.projections_path, self.log)
        self.checkpoints.append(self.live.checkpoint())

    def close_shadow(self) -> None:
        if self.shadow is not None:
            self.shadow.close()
            self.shadow = None

    def close(self) -> None:
        self.close_shadow()
        self.live.close()
        self.log.close()


ACTIONS = st.sampled_from(["append", "read", "apply", "rebuild", "shadow", "swap", "replay"])
STEPS = st.lists(st.tuples(ACTIONS, st.integers(min_value=1, max_value=7)), max_size=40)


def _run(steps: Sequence[tuple[str, int]], seed: int) -> None:
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        world = World(directory, make_settings(directory / "data"), _records(40, seed))
        try:
            for action, size in steps:
                world.step(action, size)
            # The projector finishes what it had in flight, then catches up from the store.
            while world.in_flight:
                world.step("apply", 0)
            catch_up(world.log, world.live)
            assert world.live.checkpoint() == world.log.head_seq()
            assert world.checkpoints == sorted(world.checkpoints), "the checkpoint moved back"
            clean = ProjectionStore(directory / "clean.db", world.settings)
            try:
                catch_up(world.log, clean)
                assert digest(world.live) == digest(clean)
            finally:
                clean.close()
        finally:
            world.close()


@settings(max_examples=60, deadline=None)
@given(steps=STEPS, seed=st.integers(min_value=0, max_value=3))
def test_any_interleaving_of_live_applies_and_a_swap_equals_a_rebuild(
    steps: list[tuple[str, int]], seed: int
) -> None:
    _run(steps, seed)


def test_the_interleaving_that_lost_events_before() -> None:
    """The shadow catches up, the live projector applies more, then the swap comes."""
    _run(
        [
            ("append", 7),
            ("read", 7),
            ("apply", 0),
            ("rebuild", 0),
            ("shadow", 7),
            ("append", 7),
            ("read", 7),
            ("apply", 0),  # live is now past the shadow
            ("swap", 0),  # refused: the shadow is behind
            ("replay", 0),  # catches the shadow up, then swaps
            ("append", 3),
            ("read", 3),
        ],
        seed=0,
    )


def test_a_batch_that_does_not_follow_the_stored_checkpoint_is_read_again(
    tmp_path: Path,
) -> None:
    """Whatever moved the checkpoint back, the projector re-applies from the stored one."""
    settings_ = make_settings(tmp_path / "data")
    log = EventLog(settings_.events_path)
    live = ProjectionStore(settings_.projections_path, settings_)
    older = ProjectionStore(tmp_path / "older.db", settings_)
    try:
        log.append_batch(_records(10, seed=1))
        catch_up(log, live, batch_size=4)
        catch_up(log, older)
        log.append_batch(_records(20, seed=2)[10:])
        stale_after = live.checkpoint()
        in_flight = log.read(after=stale_after, payloads_of=PROJECTED_TYPES)
        live.apply(in_flight[:5], after=stale_after)
        # An operator restores an older copy: the stored checkpoint goes back to 10.
        older.conn.backup(live.conn)
        assert live.checkpoint() == 10
        refused = live.apply(in_flight[5:], after=in_flight[4].seq)
        assert (refused.applied, refused.last_seq) == (0, 10)
        assert live.checkpoint() == 10
        assert catch_up(log, live).applied == 10
        clean = ProjectionStore(tmp_path / "clean.db", settings_)
        catch_up(log, clean)
        assert digest(live) == digest(clean)
        clean.close()
    finally:
        older.close()
        live.close()
        log.close()


def test_the_swap_waits_for_a_live_writer_and_then_holds_the_write_lock(tmp_path: Path) -> None:
    """Even after the shadow applied batches. Its connection's cached `BEGIN IMMEDIATE`,
    prepared before the ATTACH, locked the shadow only: the copy read the live store, then
    could not upgrade to write while a live writer held the lock and failed at once with
    "database is locked" (an automatic rebuild then gave up until the next start)."""
    settings = make_settings(tmp_path / "data")
    log = EventLog(settings.events_path)
    log.append_batch(_records(3, seed=1))
    live = ProjectionStore(settings.projections_path, settings)
    shadow = ProjectionStore(tmp_path / "data" / "shadow.db", settings)
    catch_up(log, live)
    catch_up(log, shadow)  # the shadow's connection has now prepared BEGIN IMMEDIATE
    writer = sqlite3.connect(
        settings.projections_path, isolation_level=None, check_same_thread=False
    )
    writer.execute("BEGIN IMMEDIATE")  # a live projector's batch, committing in a moment
    committed = threading.Timer(0.3, lambda: writer.execute("COMMIT"))
    committed.start()
    probe = sqlite3.connect(settings.projections_path, timeout=0, isolation_level=None)
    refused: list[str] = []

    def try_to_write() -> None:
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            refused.append(str(e))
        else:
            probe.execute("ROLLBACK")

    try:
        assert shadow.copy_over(settings.projections_path, before_commit=try_to_write)
        assert refused == ["database is locked"]  # held until the copy committed
        assert digest(live) == digest(shadow)
    finally:
        committed.join()
        for conn in (writer, probe):
            conn.close()
        shadow.close()
        live.close()
        log.close()
