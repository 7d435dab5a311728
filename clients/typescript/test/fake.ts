/**
 * An in-process stand-in for billhook, behind an injected `fetch`: enough of
 * the check, entitlement and change-feed routes to drive the client, plus the
 * faults (down, 5xx, hanging) the outage policies answer.
 */

import type { EnforcementMode, Entitlement, EntitlementChange } from "../src/types.js";

export const TOKEN = "read-token";
const FEATURES: Record<string, string[]> = { free: ["reads"], team: ["ai_imports", "reads"] };
const ALL = ["ai_imports", "reads", "sso"];

interface Workspace {
  tier: string;
  seats: number | null;
}

export type Fault = null | "down" | "server_error" | "hang";

export class FakeBillhook {
  readonly workspaces = new Map<string, Workspace>();
  enforcement: EnforcementMode = "enforce";
  fault: Fault = null;
  /** Runs while a check is being answered (before it is), to make a change overtake it. */
  duringCheck: (() => void) | null = null;
  /** Answered to the feed instead of changes, once. */
  feedRefusal = false;
  /** The feed answers nothing until this resolves. */
  feedGate: Promise<void> = Promise.resolve();
  readonly requests: string[] = [];
  private readonly changes: Array<Record<string, unknown>> = [];
  private seq = 0;
  private waiters: Array<() => void> = [];

  readonly fetch = async (input: string, init: RequestInit): Promise<Response> => {
    const url = new URL(input);
    const method = init.method ?? "GET";
    this.requests.push(`${method} ${url.pathname}`);
    if (this.fault === "down") throw new TypeError("fetch failed");
    if (this.fault === "hang") return this.hang(init.signal ?? null);
    if (this.fault === "server_error") return json(503, { error: "projections_unavailable", detail: "x" });
    if (new Headers(init.headers).get("authorization") !== `Bearer ${TOKEN}`) {
      return json(401, { error: "unauthorized", detail: "a bearer token is required" });
    }
    if (url.pathname === "/v1/changes") return this.feed(url, init.signal ?? null);
    const match = /^\/v1\/workspaces\/([^/]+)\/(check|entitlements)$/.exec(url.pathname);
    if (match === null) return json(404, { error: "not_found", detail: "no such route" });
    const ws = decodeURIComponent(match[1]!);
    if (match[2] === "entitlements") return json(200, this.entitlement(ws));
    const body = JSON.parse(String(init.body)) as { action: string; seats_in_use?: number };
    this.duringCheck?.();
    return this.check(ws, body.action, body.seats_in_use);
  };

  count(suffix: string): number {
    return this.requests.filter((r) => r.endsWith(suffix)).length;
  }

  /** `ws` moves to `tier`: an entitlement change on the feed. */
  set(ws: string, tier: string, seats: number | null = 5): void {
    this.workspaces.set(ws, { tier, seats });
    const e = this.entitlement(ws);
    const change: EntitlementChange = {
      kind: "entitlement",
      cursor: `${++this.seq}-0`,
      workspace_id: ws,
      seq: this.seq,
      at: new Date().toISOString(),
      cause: { kind: "event", provider: "stripe", type: "customer.subscription.updated", event_id: `evt_${this.seq}` },
      tier: e.tier,
      source: e.source,
      status: e.status,
      attention: null,
      next_action: e.next_action,
      features: { included: e.features.included },
      seats: e.seats,
    };
    this.push({ ...change });
  }

  enforce(mode: EnforcementMode): void {
    this.enforcement = mode;
    this.push({
      kind: "enforcement",
      cursor: `${++this.seq}-0`,
      workspace_id: null,
      seq: this.seq,
      at: new Date().toISOString(),
      cause: { kind: "event", provider: "billhook", type: "billhook.enforcement_set", event_id: `op_${this.seq}` },
      enforcement: mode,
    });
  }

  /** A change of a kind the client has never heard of. */
  pushUnknown(): void {
    this.push({ kind: "price_list", cursor: `${++this.seq}-0` });
  }

  get head(): string {
    return `${this.seq}-0`;
  }

  private push(change: Record<string, unknown>): void {
    this.changes.push(change);
    const waiters = this.waiters;
    this.waiters = [];
    for (const wake of waiters) wake();
  }

  entitlement(ws: string): Entitlement {
    const w = this.workspaces.get(ws) ?? { tier: "free", seats: null };
    const included = FEATURES[w.tier] ?? [];
    return {
      workspace_id: ws,
      tier: w.tier,
      source: w.tier === "free" ? "default" : "stripe",
      status: w.tier === "free" ? "none" : "active",
      attention: null,
      next_action: w.tier === "free" ? "upgrade" : "none",
      features: { included, unavailable: ALL.filter((f) => !included.includes(f)) },
      seats: w.seats === null ? null : { purchased: w.seats },
      subscriptions: [],
      overrides: [],
      problems: [],
      enforcement: this.enforcement,
      as_of_seq: this.seq,
    };
  }

  private check(ws: string, action: string, seatsInUse: number | undefined): Response {
    if (!ALL.includes(action) && action !== "invite_member") {
      return json(400, { error: "unknown_action", detail: `unknown action ${action}` });
    }
    const e = this.entitlement(ws);
    const permitted =
      action === "invite_member"
        ? e.seats === null || (seatsInUse ?? 0) + 1 <= e.seats.purchased
        : e.features.included.includes(action);
    const denied = !permitted && this.enforcement !== "disabled";
    const answer = {
      workspace_id: ws,
      action,
      allowed: !denied || this.enforcement === "observe",
      decision: !denied ? "allow" : this.enforcement === "observe" ? "would_deny" : "deny",
      reason: denied ? (action === "invite_member" ? "seat_limit" : "tier_required") : null,
      required_tier: denied && action !== "invite_member" ? "team" : null,
      tier: e.tier,
      next_action: e.next_action,
      enforcement: this.enforcement,
      as_of_seq: this.seq,
    };
    if (denied && this.enforcement === "enforce") {
      return json(402, { ...answer, error: "billing_required", detail: "this action needs the team tier" });
    }
    return json(200, answer);
  }

  private async feed(url: URL, signal: AbortSignal | null): Promise<Response> {
    await this.feedGate;
    if (this.feedRefusal) {
      this.feedRefusal = false;
      return json(400, { error: "invalid_request", detail: "after: not a cursor of this feed" });
    }
    const after = url.searchParams.get("after");
    const limit = Number(url.searchParams.get("limit") ?? 100);
    const wait = Number(url.searchParams.get("wait") ?? 0);
    if (after === "now") return json(200, { changes: [], next: this.head });
    const position = after === null ? 0 : Number(after.split("-")[0]);
    let page = this.changes.filter((c) => Number(String(c.cursor).split("-")[0]) > position);
    if (page.length === 0 && wait > 0) {
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(resolve, wait * 1000);
        this.waiters.push(() => {
          clearTimeout(timer);
          resolve();
        });
        signal?.addEventListener("abort", () => {
          clearTimeout(timer);
          reject(new DOMException("aborted", "AbortError"));
        });
      });
      page = this.changes.filter((c) => Number(String(c.cursor).split("-")[0]) > position);
    }
    page = page.slice(0, limit);
    const next = page.length > 0 ? String(page[page.length - 1]!.cursor) : (after ?? "0-0");
    return json(200, { changes: page, next });
  }

  private hang(signal: AbortSignal | null): Promise<Response> {
    return new Promise((_, reject) => {
      signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    });
  }
}

function json(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
}

/** Resolves once `condition()` holds; fails the test after `ms`. */
export async function until(condition: () => boolean, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("timed out waiting");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** A clock the test moves by hand, in ms. */
export class ManualClock {
  now = 1_000_000;
  readonly read = (): number => this.now;
  advance(ms: number): void {
    this.now += ms;
  }
}
