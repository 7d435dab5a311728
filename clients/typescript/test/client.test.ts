/** The client against the in-process stand-in: the cache, its invalidation, the outage policies. */

import assert from "node:assert/strict";
import { afterEach, describe, test } from "node:test";

import {
  Billhook,
  BillhookUnavailable,
  BillingRequired,
  BillingUnavailable,
  Unauthorized,
  UnknownAction,
  type BillhookOptions,
} from "../src/index.js";
import { FakeBillhook, ManualClock, TOKEN, until } from "./fake.js";

const open: Billhook[] = [];
const quiet = { warn: (): void => undefined };

function client(fake: FakeBillhook, options: Partial<BillhookOptions> = {}): Billhook {
  const bh = new Billhook({ baseUrl: "http://billhook.test", token: TOKEN, fetch: fake.fetch, logger: quiet, ...options });
  open.push(bh);
  return bh;
}

/** A client whose follower has reached the fake's head. */
async function following(fake: FakeBillhook, options: Partial<BillhookOptions> = {}): Promise<Billhook> {
  const bh = client(fake, options);
  await until(() => bh.cursor === fake.head);
  return bh;
}

afterEach(async () => {
  await Promise.all(open.splice(0).map((bh) => bh.close()));
});

describe("the cache", () => {
  test("a cached check makes no request and is billhook's own answer", async () => {
    const fake = new FakeBillhook();
    fake.set("ws_1", "team");
    const bh = await following(fake);
    const first = await bh.check("ws_1", "ai_imports");
    const again = await bh.check("ws_1", "ai_imports");
    assert.equal(fake.count("/check"), 1);
    assert.equal(again, first);
    assert.deepEqual(
      [first.allowed, first.decision, first.asOfSeq, first.fallback, first.fallbackReason, first.status],
      [true, "allow", 1, false, null, 200],
    );
    assert.equal(first.body, JSON.stringify(first.answer));
  });

  test("seats in use are part of the key", async () => {
    const fake = new FakeBillhook();
    fake.set("ws_1", "team", 5);
    const bh = await following(fake);
    assert.equal((await bh.check("ws_1", "invite_member", { seatsInUse: 4 })).allowed, true);
    assert.equal((await bh.check("ws_1", "invite_member", { seatsInUse: 5 })).allowed, false);
    await bh.check("ws_1", "invite_member", { seatsInUse: 4 });
    assert.equal(fake.count("/check"), 2);
  });

  test("nothing is cached before the follower's first page", async () => {
    const fake = new FakeBillhook();
    let open_ = (): void => undefined;
    fake.feedGate = new Promise((resolve) => (open_ = resolve));
    const bh = client(fake);
    await bh.check("ws_1", "reads");
    await bh.check("ws_1", "reads");
    assert.equal(fake.count("/check"), 2);
    open_();
    await until(() => bh.cursor !== null);
    await bh.check("ws_1", "reads");
    await bh.check("ws_1", "reads");
    assert.equal(fake.count("/check"), 3);
  });

  test("an entitlement change drops that workspace's answers, and only those", async () => {
    const fake = new FakeBillhook();
    const bh = await following(fake);
    const denied = await bh.check("ws_1", "ai_imports");
    assert.equal(denied.allowed, false);
    await bh.check("ws_2", "ai_imports");
    await bh.entitlements("ws_1");
    fake.set("ws_1", "team");
    await until(() => bh.cursor === fake.head);
    assert.equal(bh.cachedCheck("ws_1", "ai_imports"), null);
    assert.notEqual(bh.cachedCheck("ws_2", "ai_imports"), null);
    const allowed = await bh.check("ws_1", "ai_imports");
    assert.deepEqual([allowed.allowed, allowed.asOfSeq], [true, 1]);
    assert.equal((await bh.entitlements("ws_1")).tier, "team");
    assert.equal(fake.count("/entitlements"), 2);
  });

  test("an enforcement change, or one of an unknown kind, drops every answer", async () => {
    const fake = new FakeBillhook();
    const bh = await following(fake);
    await bh.check("ws_1", "ai_imports");
    await bh.check("ws_2", "ai_imports");
    fake.enforce("observe");
    await until(() => bh.cursor === fake.head);
    assert.equal(bh.cachedCheck("ws_1", "ai_imports"), null);
    assert.equal(bh.cachedCheck("ws_2", "ai_imports"), null);
    assert.equal((await bh.check("ws_1", "ai_imports")).decision, "would_deny");
    fake.pushUnknown();
    await until(() => bh.cursor === fake.head);
    assert.equal(bh.cachedCheck("ws_1", "ai_imports"), null);
  });

  test("an answer a change overtook is given once, not cached", async () => {
    const fake = new FakeBillhook();
    const bh = await following(fake);
    fake.duringCheck = () => {
      fake.duringCheck = null;
      fake.set("ws_1", "team");
    };
    const overtaken = await bh.check("ws_1", "ai_imports");
    assert.equal(overtaken.allowed, true);
    await until(() => bh.cursor === fake.head);
    // Seen while the change was in flight: asked again, not trusted from the cache.
    assert.equal(bh.cachedCheck("ws_1", "ai_imports"), null);
  });

  test("past maxStalenessMs without the follower catching up, nothing cached is trusted", async () => {
    const fake = new FakeBillhook();
    const clock = new ManualClock();
    const bh = await following(fake, { clock: clock.read, maxStalenessMs: 1_000 });
    await bh.check("ws_1", "reads");
    fake.fault = "down";
    clock.advance(1_001);
    assert.equal(bh.cachedCheck("ws_1", "reads"), null);
  });

  test("without a follower an answer is trusted for maxStalenessMs", async () => {
    const fake = new FakeBillhook();
    const clock = new ManualClock();
    const bh = client(fake, { follow: false, clock: clock.read, maxStalenessMs: 1_000 });
    await bh.check("ws_1", "reads");
    clock.advance(1_000);
    await bh.check("ws_1", "reads");
    assert.equal(fake.count("/check"), 1);
    clock.advance(1);
    await bh.check("ws_1", "reads");
    assert.equal(fake.count("/check"), 2);
    assert.equal(fake.count("/v1/changes"), 0);
  });

  test("a refused cursor drops the cache and follows from the head", async () => {
    const fake = new FakeBillhook();
    const bh = await following(fake);
    await bh.check("ws_1", "reads");
    fake.feedRefusal = true;
    fake.set("ws_2", "team"); // wakes the long poll; its next request is refused
    await until(() => fake.feedRefusal === false);
    assert.equal(bh.cachedCheck("ws_1", "reads"), null);
    await until(() => bh.cursor === fake.head);
  });

  test("close() ends the long poll at once", async () => {
    const fake = new FakeBillhook();
    const bh = await following(fake, { maxStalenessMs: 60_000 });
    const started = Date.now();
    await bh.close();
    assert.ok(Date.now() - started < 1_000);
  });
});

describe("errors", () => {
  test("billhook's refusals are the client's errors", async () => {
    const fake = new FakeBillhook();
    const bh = client(fake, { follow: false });
    await assert.rejects(bh.check("ws_1", "teleport"), UnknownAction);
    const stranger = new Billhook({ baseUrl: "http://billhook.test", token: "nope", fetch: fake.fetch, follow: false });
    await assert.rejects(stranger.check("ws_1", "reads"), (e: unknown) => e instanceof Unauthorized && e.status === 401);
  });

  test("options are checked", () => {
    const fake = new FakeBillhook();
    assert.throws(() => client(fake, { fail: "maybe" as "open", follow: false }), RangeError);
    assert.throws(() => client(fake, { maxStalenessMs: 0, follow: false }), RangeError);
  });
});

describe("the outage policies", () => {
  async function down(
    fail: "closed" | "open" | "last_known",
    options: Partial<BillhookOptions> = {},
  ): Promise<{ fake: FakeBillhook; bh: Billhook; clock: ManualClock }> {
    const fake = new FakeBillhook();
    fake.set("ws_paid", "team");
    const clock = new ManualClock();
    const bh = await following(fake, { fail, clock: clock.read, maxStalenessMs: 1_000, lastKnownMaxAgeMs: 10_000, ...options });
    await bh.entitlements("ws_free"); // learns the default tier's features
    await bh.check("ws_paid", "ai_imports");
    await bh.check("ws_free", "ai_imports");
    await bh.entitlements("ws_paid");
    fake.fault = "down";
    clock.advance(1_001); // the cache is no longer trusted
    return { fake, bh, clock };
  }

  test("closed: only the default tier's features, every answer marked fallback", async () => {
    const { bh } = await down("closed");
    const paid = await bh.check("ws_paid", "ai_imports");
    assert.deepEqual(
      [paid.allowed, paid.decision, paid.fallback, paid.fallbackReason, paid.billingRequired, paid.body],
      [false, "deny", true, "unreachable", false, null],
    );
    const reads = await bh.check("ws_paid", "reads");
    assert.deepEqual([reads.allowed, reads.fallback], [true, true]);
    assert.equal((await bh.check("ws_paid", "invite_member", { seatsInUse: 0 })).allowed, false);
    await assert.rejects(bh.entitlements("ws_paid"), BillhookUnavailable);
    await assert.rejects(bh.require("ws_paid", "ai_imports"), BillingUnavailable);
  });

  test("closed, cold start: freeActions are allowed, nothing else", async () => {
    const fake = new FakeBillhook();
    fake.fault = "down";
    const bh = client(fake, { follow: false, freeActions: ["reads"] });
    assert.deepEqual(
      [(await bh.check("ws_1", "reads")).allowed, (await bh.check("ws_1", "ai_imports")).allowed],
      [true, false],
    );
  });

  test("open: every action allowed, marked fallback", async () => {
    const { bh } = await down("open");
    const free = await bh.check("ws_free", "sso");
    assert.deepEqual([free.allowed, free.decision, free.fallback, free.fallbackReason], [true, "allow", true, "unreachable"]);
    const entitlement = await bh.entitlements("ws_paid");
    assert.deepEqual([entitlement.tier, entitlement.fallback], ["team", true]);
  });

  test("last_known: billhook's last answer while young enough, then closed", async () => {
    const { bh, clock } = await down("last_known");
    const paid = await bh.check("ws_paid", "ai_imports");
    assert.deepEqual([paid.allowed, paid.fallback, paid.status, paid.asOfSeq], [true, true, 200, 1]);
    const free = await bh.check("ws_free", "ai_imports");
    // billhook's own cached 402, given again: still billhook's 402.
    assert.deepEqual([free.allowed, free.billingRequired, free.fallback], [false, true, true]);
    await assert.rejects(bh.require("ws_free", "ai_imports"), BillingRequired);
    // Derived from the last known entitlement: seats and features.
    assert.equal((await bh.check("ws_paid", "invite_member", { seatsInUse: 4 })).allowed, true);
    assert.equal((await bh.check("ws_paid", "invite_member", { seatsInUse: 5 })).allowed, false);
    assert.equal((await bh.entitlements("ws_paid")).fallback, true);
    clock.advance(10_000);
    const old = await bh.check("ws_paid", "ai_imports");
    assert.deepEqual([old.allowed, old.fallback, old.billingRequired], [false, true, false]);
    await assert.rejects(bh.entitlements("ws_paid"), BillhookUnavailable);
  });

  test("last_known answers from a change the feed brought, not the cached denial", async () => {
    const fake = new FakeBillhook();
    const clock = new ManualClock();
    const bh = await following(fake, { fail: "last_known", clock: clock.read, maxStalenessMs: 1_000 });
    assert.equal((await bh.check("ws_1", "ai_imports")).allowed, false);
    fake.set("ws_1", "team");
    await until(() => bh.cursor === fake.head);
    fake.fault = "down";
    clock.advance(1_001);
    const upgraded = await bh.check("ws_1", "ai_imports");
    assert.deepEqual([upgraded.allowed, upgraded.fallback, upgraded.tier], [true, true, "team"]);
  });

  test("a policy denial under observe lets the call through as would_deny", async () => {
    const fake = new FakeBillhook();
    fake.enforce("observe");
    const clock = new ManualClock();
    const bh = await following(fake, { clock: clock.read, maxStalenessMs: 1_000 });
    await bh.check("ws_1", "reads"); // learns the mode
    fake.fault = "down";
    clock.advance(1_001);
    const answer = await bh.check("ws_1", "ai_imports");
    assert.deepEqual([answer.allowed, answer.decision, answer.fallback], [true, "would_deny", true]);
    assert.equal(await bh.requireFeature("ws_1", "ai_imports"), null);
  });

  test("5xx and a timeout are outages too, named in fallbackReason", async () => {
    const fake = new FakeBillhook();
    const bh = client(fake, { follow: false, timeoutMs: 50 });
    fake.fault = "server_error";
    assert.equal((await bh.check("ws_1", "ai_imports")).fallbackReason, "server_error:503");
    fake.fault = "hang";
    assert.equal((await bh.check("ws_1", "ai_imports")).fallbackReason, "timeout");
    fake.fault = "down";
    assert.equal((await bh.check("ws_1", "ai_imports")).fallbackReason, "unreachable");
  });
});

describe("requireFeature", () => {
  test("null when allowed; billhook's 402 body as it sent it when denied", async () => {
    const fake = new FakeBillhook();
    fake.set("ws_paid", "team");
    const bh = client(fake, { follow: false });
    assert.equal(await bh.requireFeature("ws_paid", "ai_imports"), null);
    const denied = await bh.requireFeature("ws_free", "ai_imports");
    assert.ok(denied !== null);
    assert.equal(denied.status, 402);
    assert.equal(denied.headers.get("content-type"), "application/json");
    const check = await bh.check("ws_free", "ai_imports");
    assert.equal(await denied.text(), check.body);
    assert.equal(JSON.parse(check.body!).error, "billing_required");
  });

  test("503 billing_unavailable when the outage policy denied", async () => {
    const fake = new FakeBillhook();
    fake.fault = "down";
    const bh = client(fake, { follow: false });
    const denied = await bh.requireFeature("ws_1", "ai_imports");
    assert.ok(denied !== null);
    assert.equal(denied.status, 503);
    assert.equal(denied.headers.get("content-type"), "application/json");
    assert.deepEqual(await denied.json(), {
      error: "billing_unavailable",
      detail: "billhook could not be asked; the outage policy denies this action",
      workspace_id: "ws_1",
      action: "ai_imports",
      fallback_reason: "unreachable",
    });
  });
});
