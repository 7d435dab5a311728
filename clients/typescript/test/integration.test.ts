/**
 * The client against a real billhook (`billhook serve`, started here): cached
 * checks make no request, a change on the feed drops the cached answer,
 * requireFeature forwards billhook's own 402, and with billhook stopped the
 * outage policies answer, marked fallback.
 */

import assert from "node:assert/strict";
import { after, afterEach, before, describe, test } from "node:test";

import { Billhook, type BillhookOptions, type FetchLike } from "../src/index.js";
import { until } from "./fake.js";
import { BillhookServer } from "./support.js";

const quiet = { warn: (): void => undefined };

/** `fetch`, counting requests by method and path. */
function counting(): { fetch: FetchLike; count: (method: string, suffix: string) => number } {
  const seen: string[] = [];
  return {
    fetch: (input, init) => {
      seen.push(`${init.method ?? "GET"} ${new URL(input).pathname}`);
      return fetch(input, init);
    },
    count: (method, suffix) => seen.filter((r) => r.startsWith(`${method} `) && r.endsWith(suffix)).length,
  };
}

async function caughtUp(bh: Billhook, server: BillhookServer): Promise<void> {
  const head = await server.head();
  await until(() => bh.cursor === head, 10_000);
}

describe("against a real billhook", { timeout: 120_000 }, () => {
  const server = new BillhookServer();
  const clients: Billhook[] = [];

  function client(options: Partial<BillhookOptions> = {}): Billhook {
    const bh = new Billhook({ baseUrl: server.url, token: server.credentials.read, logger: quiet, ...options });
    clients.push(bh);
    return bh;
  }

  before(async () => {
    await server.start();
  });

  afterEach(async () => {
    await Promise.all(clients.splice(0).map((bh) => bh.close()));
  });

  after(async () => {
    await server.dispose();
  });

  test("a cached check makes no request; a change on the feed drops it", async () => {
    await server.enforce("observe");
    const http = counting();
    const bh = client({ fetch: http.fetch });
    await caughtUp(bh, server);
    const before_ = await bh.check("ws_up", "ai_imports");
    assert.deepEqual([before_.allowed, before_.decision, before_.fallback], [true, "would_deny", false]);
    for (let i = 0; i < 5; i++) assert.equal(await bh.check("ws_up", "ai_imports"), before_);
    assert.equal(http.count("POST", "/check"), 1);

    const seq = await server.subscribe("ws_up");
    await caughtUp(bh, server);
    assert.equal(bh.cachedCheck("ws_up", "ai_imports"), null);
    const upgraded = await bh.check("ws_up", "ai_imports");
    assert.deepEqual([upgraded.allowed, upgraded.decision, upgraded.tier], [true, "allow", "team"]);
    assert.ok(upgraded.asOfSeq !== null && upgraded.asOfSeq >= seq);
    assert.equal(http.count("POST", "/check"), 2);
    const entitlement = await bh.entitlements("ws_up");
    assert.deepEqual([entitlement.tier, entitlement.source, entitlement.seats], ["team", "stripe", 5]);
    assert.ok(entitlement.features.included.includes("ai_imports"));
  });

  test("requireFeature under enforce: billhook's own 402 body", async () => {
    const bh = client();
    await caughtUp(bh, server);
    await server.subscribe("ws_paid");
    await server.enforce("enforce");
    await caughtUp(bh, server);
    assert.equal(await bh.requireFeature("ws_paid", "ai_imports"), null);
    const denied = await bh.requireFeature("ws_free", "ai_imports");
    assert.ok(denied !== null);
    assert.equal(denied.status, 402);
    assert.equal(denied.headers.get("content-type"), "application/json");
    const raw = await server.check("ws_free", "ai_imports");
    assert.equal(raw.status, 402);
    const body = await denied.text();
    assert.equal(body, await raw.text());
    const answer = JSON.parse(body) as Record<string, unknown>;
    assert.deepEqual(
      [answer.error, answer.workspace_id, answer.action, answer.required_tier, answer.reason, answer.next_action],
      ["billing_required", "ws_free", "ai_imports", "team", "tier_required", "upgrade"],
    );
    // Cached: the same 402 again without asking.
    assert.equal(bh.cachedCheck("ws_free", "ai_imports")?.billingRequired, true);
    await server.enforce("observe");
    await caughtUp(bh, server);
    assert.equal(await bh.requireFeature("ws_free", "ai_imports"), null);
  });

  test("billhook stopped: each policy answers, marked fallback", async () => {
    await server.subscribe("ws_team");
    await server.enforce("enforce");
    const options = { maxStalenessMs: 400, lastKnownMaxAgeMs: 60_000 };
    const closed = client({ ...options, fail: "closed" });
    const open = client({ ...options, fail: "open" });
    const lastKnown = client({ ...options, fail: "last_known" });
    for (const bh of [closed, open, lastKnown]) {
      await caughtUp(bh, server);
      await bh.entitlements("ws_nobody"); // the default tier's features
      await bh.check("ws_team", "ai_imports");
      await bh.entitlements("ws_team");
    }
    await server.stop();
    await new Promise((r) => setTimeout(r, 500)); // past maxStalenessMs: the cache is not trusted

    const denied = await closed.check("ws_team", "ai_imports");
    assert.deepEqual(
      [denied.allowed, denied.decision, denied.fallback, denied.fallbackReason],
      [false, "deny", true, "unreachable"],
    );
    const reads = await closed.check("ws_team", "reads");
    assert.deepEqual([reads.allowed, reads.fallback], [true, true]);
    const unavailable = await closed.requireFeature("ws_team", "ai_imports");
    assert.equal(unavailable?.status, 503);
    assert.equal(((await unavailable?.json()) as { error: string }).error, "billing_unavailable");

    const opened = await open.check("ws_nobody", "ai_imports");
    assert.deepEqual([opened.allowed, opened.fallback, opened.fallbackReason], [true, true, "unreachable"]);

    const known = await lastKnown.check("ws_team", "ai_imports");
    assert.deepEqual([known.allowed, known.fallback, known.status], [true, true, 200]);
    const entitlement = await lastKnown.entitlements("ws_team");
    assert.deepEqual([entitlement.tier, entitlement.fallback, entitlement.fallbackReason], ["team", true, "unreachable"]);

    // billhook back on the same data: the followers resume and answers are billhook's again.
    await server.start();
    await caughtUp(lastKnown, server);
    const again = await lastKnown.check("ws_team", "ai_imports");
    assert.deepEqual([again.allowed, again.fallback], [true, false]);
  });
});
