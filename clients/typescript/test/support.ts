/**
 * What the tests need from the Python side: the repo's .venv runs billhook
 * (a real server on a free loopback port), makes Stripe events, signs Standard
 * Webhooks and writes billhook's OpenAPI document.
 */

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The repository: this file runs from clients/typescript/dist/test/. */
export const REPO = resolve(dirname(fileURLToPath(import.meta.url)), "../../../..");
/** The client's own folder (clients/typescript). */
export const PACKAGE = join(REPO, "clients", "typescript");
const VENV_BIN = process.env.BILLHOOK_VENV_BIN ?? join(REPO, ".venv", "bin");

/** Runs `code` with the repo's Python; its standard output (throws with stderr on failure). */
export function python(code: string, input?: string): string {
  const result = spawnSync(join(VENV_BIN, "python"), ["-c", code], {
    cwd: REPO,
    encoding: "utf-8",
    input,
    timeout: 60_000,
  });
  if (result.status !== 0) throw new Error(`python failed (${result.status}): ${result.stderr}`);
  return result.stdout;
}

/** The test deployment's credentials (billhook.testing.settings). */
export interface Credentials {
  read: string;
  admin: string;
  stripeSecret: string;
}

export function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createServer();
    server.once("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address !== null ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

const encoder = new TextEncoder();

/** Stripe's signature header, `t=<ts>,v1=<hex HMAC-SHA256 of "{t}.{body}">`, made with Web Crypto. */
export async function stripeSignature(body: string, secret: string, timestamp: number): Promise<string> {
  const key = await crypto.subtle.importKey("raw", encoder.encode(secret), { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  const mac = new Uint8Array(await crypto.subtle.sign("HMAC", key, encoder.encode(`${timestamp}.${body}`)));
  const hex = Array.from(mac, (b) => b.toString(16).padStart(2, "0")).join("");
  return `t=${timestamp},v1=${hex}`;
}

/** A Stripe `customer.subscription.created` for `workspace` (team, 5 seats), as billhook's tests make it. */
export function subscriptionEvent(workspace: string): string {
  const n = workspace.replace(/^ws_/, "");
  return python(
    [
      "import sys",
      "from billhook.testing.stripe import stripe_event_body, stripe_subscription",
      `sub = stripe_subscription(id="sub_${n}", customer="cus_${n}", metadata={"workspace_id": "${workspace}"})`,
      'sys.stdout.write(stripe_event_body("customer.subscription.created", obj=sub).decode())',
    ].join("\n"),
  );
}

/** billhook served by `billhook serve` on a free loopback port, with its data in a temp folder. */
export class BillhookServer {
  readonly directory = mkdtempSync(join(tmpdir(), "billhook-ts-"));
  readonly credentials: Credentials;
  url = "";
  private process: ChildProcess | null = null;
  private readonly config: string;

  constructor() {
    const out = python(
      [
        "import json, pathlib, sys",
        "from billhook.testing.settings import ADMIN_TOKEN, READ_TOKEN, write_config",
        "from billhook.testing.stripe import STRIPE_SECRET",
        `path = write_config(pathlib.Path(${JSON.stringify(this.directory)}))`,
        "json.dump({'config': str(path), 'read': READ_TOKEN, 'admin': ADMIN_TOKEN, 'stripeSecret': STRIPE_SECRET}, sys.stdout)",
      ].join("\n"),
    );
    const parsed = JSON.parse(out) as Credentials & { config: string };
    this.config = parsed.config;
    this.credentials = { read: parsed.read, admin: parsed.admin, stripeSecret: parsed.stripeSecret };
  }

  /** Serve (again, on the same port and data once it has a port). */
  async start(): Promise<string> {
    const port = this.url === "" ? await freePort() : Number(new URL(this.url).port);
    this.url = `http://127.0.0.1:${port}`;
    const child = spawn(
      join(VENV_BIN, "billhook"),
      ["serve", "--config", this.config, "--port", String(port), "--log-level", "warning"],
      { cwd: this.directory, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
    this.process = child;
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (child.exitCode !== null) throw new Error(`billhook exited: ${stderr}`);
      try {
        if ((await fetch(`${this.url}/healthz`)).ok) return this.url;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) throw new Error(`billhook did not start: ${stderr}`);
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  async stop(): Promise<void> {
    const child = this.process;
    this.process = null;
    if (child === null || child.exitCode !== null) return;
    const exited = new Promise((r) => child.once("exit", r));
    child.kill("SIGTERM");
    const timer = setTimeout(() => child.kill("SIGKILL"), 10_000);
    await exited;
    clearTimeout(timer);
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.directory, { recursive: true, force: true });
  }

  private headers(token: string): Record<string, string> {
    return { authorization: `Bearer ${token}`, "content-type": "application/json" };
  }

  /** A signed Stripe delivery; its seq, once the projections have it. */
  async deliver(body: string): Promise<number> {
    const signature = await stripeSignature(body, this.credentials.stripeSecret, Math.floor(Date.now() / 1000));
    const response = await fetch(`${this.url}/webhooks/stripe`, {
      method: "POST",
      body,
      headers: { "stripe-signature": signature, "content-type": "application/json" },
    });
    if (response.status !== 200) throw new Error(`delivery refused: ${response.status} ${await response.text()}`);
    const { seq } = (await response.json()) as { seq: number };
    await this.projected(seq);
    return seq;
  }

  /** `workspace` gets a team subscription (5 seats). */
  subscribe(workspace: string): Promise<number> {
    return this.deliver(subscriptionEvent(workspace));
  }

  async enforce(mode: "disabled" | "observe" | "enforce"): Promise<number> {
    const response = await fetch(`${this.url}/v1/admin/enforcement`, {
      method: "PUT",
      body: JSON.stringify({ mode, approved_by: "cfo", reason: "rollout" }),
      headers: this.headers(this.credentials.admin),
    });
    if (response.status !== 200) throw new Error(`enforcement refused: ${response.status}`);
    const { seq } = (await response.json()) as { seq: number };
    await this.projected(seq);
    return seq;
  }

  /** Adds an outbound endpoint through the admin API; its id and secret (shown once). */
  async addEndpoint(url: string): Promise<{ id: string; secret: string }> {
    const response = await fetch(`${this.url}/v1/admin/endpoints`, {
      method: "POST",
      body: JSON.stringify({ url, actor: "ts-tests", reason: "verify deliveries" }),
      headers: this.headers(this.credentials.admin),
    });
    if (response.status !== 201) throw new Error(`endpoint refused: ${response.status} ${await response.text()}`);
    return (await response.json()) as { id: string; secret: string };
  }

  /** The feed's cursor now: a follower that reached it has seen every change so far. */
  async head(): Promise<string> {
    const response = await fetch(`${this.url}/v1/changes?after=now`, { headers: this.headers(this.credentials.read) });
    return ((await response.json()) as { next: string }).next;
  }

  /** billhook's raw answer to a check. */
  check(workspace: string, action: string): Promise<Response> {
    return fetch(`${this.url}/v1/workspaces/${workspace}/check`, {
      method: "POST",
      body: JSON.stringify({ action }),
      headers: this.headers(this.credentials.read),
    });
  }

  private async projected(seq: number): Promise<void> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const response = await fetch(`${this.url}/v1/workspaces/ws_probe/entitlements`, {
        headers: this.headers(this.credentials.read),
      });
      const { as_of_seq } = (await response.json()) as { as_of_seq: number };
      if (as_of_seq >= seq) return;
      if (Date.now() > deadline) throw new Error("the projections did not catch up");
      await new Promise((r) => setTimeout(r, 10));
    }
  }
}
