/**
 * verifyWebhook against deliveries signed by the Python `standardwebhooks`
 * package (the library billhook signs its outbound deliveries with), made by
 * the repo's .venv when the tests start.
 */

import assert from "node:assert/strict";
import { before, describe, test } from "node:test";

import { WebhookVerificationError, verifyWebhook } from "../src/index.js";
import { python } from "./support.js";

interface Signed {
  body: string;
  id: string;
  timestamp: string;
  signatures: Record<string, string>;
}

interface Fixtures {
  secretA: string;
  secretB: string;
  now: Signed;
  old: Signed;
  future: Signed;
}

const SIGN = `
import base64, json, os, sys, time
from datetime import datetime, timezone
from standardwebhooks import Webhook

secret_a = "whsec_" + base64.b64encode(os.urandom(24)).decode()
secret_b = "whsec_" + base64.b64encode(os.urandom(32)).decode()
change = {"cursor": "13-0", "kind": "entitlement", "workspace_id": "ws_é", "seq": 13,
          "at": "2026-11-21T12:00:00.123Z", "tier": "team", "features": {"included": ["ai_imports"]},
          "seats": {"purchased": 5}}

def signed(offset):
    ts = int(time.time()) + offset
    body = json.dumps({"type": "entitlement.updated", "timestamp": "2026-11-21T12:00:00Z",
                       "data": change}, ensure_ascii=False)
    at = datetime.fromtimestamp(ts, tz=timezone.utc)
    msg = f"msg_{ts}_{offset}"
    return {"body": body, "id": msg, "timestamp": str(ts), "signatures": {
        name: Webhook(secret).sign(msg, at, body.encode())
        for name, secret in (("a", secret_a), ("b", secret_b))}}

json.dump({"secretA": secret_a, "secretB": secret_b, "now": signed(0),
           "old": signed(-6 * 60), "future": signed(6 * 60)}, sys.stdout, ensure_ascii=False)
`;

function headers(s: Signed, signature: string): Record<string, string> {
  return { "Webhook-Id": s.id, "Webhook-Timestamp": s.timestamp, "Webhook-Signature": signature };
}

describe("verifyWebhook", () => {
  let f: Fixtures;

  before(() => {
    f = JSON.parse(python(SIGN)) as Fixtures;
  });

  test("a delivery signed by standardwebhooks verifies and answers its payload", async () => {
    const payload = await verifyWebhook<{ type: string; data: { workspace_id: string } }>(
      f.now.body,
      headers(f.now, f.now.signatures.a!),
      f.secretA,
    );
    assert.deepEqual([payload.type, payload.data.workspace_id], ["entitlement.updated", "ws_é"]);
    // The same as raw bytes, and with a Headers object.
    const bytes = new TextEncoder().encode(f.now.body);
    await verifyWebhook(bytes, new Headers(headers(f.now, f.now.signatures.a!)), f.secretA);
    await verifyWebhook(bytes.buffer, headers(f.now, f.now.signatures.a!), f.secretA);
  });

  test("during a rotation (two signatures), a receiver holding either secret verifies", async () => {
    const both = `${f.now.signatures.a} ${f.now.signatures.b}`;
    await verifyWebhook(f.now.body, headers(f.now, both), f.secretA);
    await verifyWebhook(f.now.body, headers(f.now, both), f.secretB);
    // A receiver holding both while it rotates its own verifies a delivery signed with either.
    await verifyWebhook(f.now.body, headers(f.now, f.now.signatures.b!), [f.secretA, f.secretB]);
  });

  test("another secret, a changed body, id or timestamp: refused", async () => {
    const sig = f.now.signatures.a!;
    const refused = (e: unknown): boolean => e instanceof WebhookVerificationError;
    await assert.rejects(verifyWebhook(f.now.body, headers(f.now, sig), f.secretB), refused);
    await assert.rejects(verifyWebhook(f.now.body.replace("team", "teal"), headers(f.now, sig), f.secretA), refused);
    await assert.rejects(verifyWebhook(f.now.body, { ...headers(f.now, sig), "Webhook-Id": "msg_other" }, f.secretA), refused);
    const shifted = String(Number(f.now.timestamp) + 1);
    await assert.rejects(
      verifyWebhook(f.now.body, { ...headers(f.now, sig), "Webhook-Timestamp": shifted }, f.secretA),
      refused,
    );
    await assert.rejects(verifyWebhook(f.now.body, headers(f.now, sig.replace("v1,", "v2,")), f.secretA), refused);
    await assert.rejects(verifyWebhook(f.now.body, headers(f.now, "v1,not-base64!"), f.secretA), refused);
  });

  test("missing headers: refused", async () => {
    for (const name of ["Webhook-Id", "Webhook-Timestamp", "Webhook-Signature"]) {
      const partial: Record<string, string> = headers(f.now, f.now.signatures.a!);
      delete partial[name];
      await assert.rejects(verifyWebhook(f.now.body, partial, f.secretA), WebhookVerificationError);
    }
  });

  test("a timestamp more than 5 minutes away: refused, however well signed", async () => {
    await assert.rejects(
      verifyWebhook(f.old.body, headers(f.old, f.old.signatures.a!), f.secretA),
      /too old/,
    );
    await assert.rejects(
      verifyWebhook(f.future.body, headers(f.future, f.future.signatures.a!), f.secretA),
      /too new/,
    );
    // The tolerance is measured from the clock given: the old one was fine 6 minutes ago.
    const then = (): number => (Number(f.old.timestamp) + 299) * 1000;
    await verifyWebhook(f.old.body, headers(f.old, f.old.signatures.a!), f.secretA, { now: then });
    const late = (): number => (Number(f.old.timestamp) + 301) * 1000;
    await assert.rejects(
      verifyWebhook(f.old.body, headers(f.old, f.old.signatures.a!), f.secretA, { now: late }),
      /too old/,
    );
  });

  test("a secret that is not whsec_ base64 is the caller's error, not a failed delivery", async () => {
    await assert.rejects(verifyWebhook(f.now.body, headers(f.now, f.now.signatures.a!), "whsec_"), TypeError);
    await assert.rejects(verifyWebhook(f.now.body, headers(f.now, f.now.signatures.a!), "whsec_%%%"), TypeError);
  });
});
