/**
 * billhook's outbound entitlement webhooks, received by a Node `http` server
 * that verifies each one with verifyWebhook: a real billhook (`billhook serve`)
 * with an endpoint added through its admin API sends them.
 */

import assert from "node:assert/strict";
import { createServer, type IncomingMessage, type Server } from "node:http";
import { after, before, describe, test } from "node:test";

import { WebhookVerificationError, verifyWebhook } from "../src/index.js";
import { until } from "./fake.js";
import { BillhookServer } from "./support.js";

interface Change {
  workspace_id: string;
  cursor: string;
  tier: string;
  seats: { purchased: number } | null;
}

interface Delivery {
  type: string;
  timestamp: string;
  data: Change;
}

function bodyOf(request: IncomingMessage): Promise<string> {
  return new Promise((done, fail) => {
    const chunks: Buffer[] = [];
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("end", () => done(Buffer.concat(chunks).toString("utf-8")));
    request.on("error", fail);
  });
}

describe("outbound deliveries to a Node receiver", { timeout: 120_000 }, () => {
  const billhook = new BillhookServer();
  const verified: { id: string; delivery: Delivery }[] = [];
  let refused = 0;
  let secret = "";
  let receiver: Server;
  let receiverUrl = "";

  before(async () => {
    receiver = createServer((request, response) => {
      void bodyOf(request).then(async (body) => {
        try {
          const delivery = await verifyWebhook<Delivery>(body, request.headers, secret);
          verified.push({ id: String(request.headers["webhook-id"]), delivery });
          response.writeHead(204).end();
        } catch (e) {
          if (!(e instanceof WebhookVerificationError)) throw e;
          refused += 1;
          response.writeHead(400).end();
        }
      });
    });
    await new Promise<void>((done) => receiver.listen(0, "127.0.0.1", done));
    const address = receiver.address();
    const port = typeof address === "object" && address !== null ? address.port : 0;
    receiverUrl = `http://127.0.0.1:${port}/hooks`;
    await billhook.start();
  });

  after(async () => {
    await billhook.dispose();
    await new Promise((done) => receiver.close(done));
  });

  test("each change is delivered, verified with the endpoint's secret, in order", async () => {
    const endpoint = await billhook.addEndpoint(receiverUrl);
    assert.match(endpoint.secret, /^whsec_/);
    secret = endpoint.secret;
    await billhook.subscribe("ws_ts_out_1");
    await billhook.subscribe("ws_ts_out_2");
    await until(() => verified.length >= 2, 20_000);
    assert.equal(refused, 0);
    const byWorkspace = new Map(verified.map((v) => [v.delivery.data.workspace_id, v]));
    for (const workspace of ["ws_ts_out_1", "ws_ts_out_2"]) {
      const got = byWorkspace.get(workspace);
      assert.ok(got, `no delivery for ${workspace}`);
      assert.equal(got.delivery.type, "entitlement.updated");
      assert.equal(got.delivery.data.tier, "team");
      assert.deepEqual(got.delivery.data.seats, { purchased: 5 });
      // The id names the endpoint and the change: a receiver dedupes on it.
      assert.equal(got.id, `${endpoint.id}_${got.delivery.data.cursor.replace("-", "_")}`);
    }
  });

  test("a receiver holding another secret refuses the delivery", async () => {
    secret = "whsec_" + Buffer.from("x".repeat(32)).toString("base64");
    const before = verified.length;
    await billhook.subscribe("ws_ts_out_3");
    await until(() => refused > 0, 20_000);
    assert.equal(verified.length, before);
  });
});
