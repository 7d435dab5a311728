/**
 * The client's memory: a cache of billhook's answers kept true by the change feed
 * (the Python client's `state.py`, in milliseconds).
 *
 * Why a cached answer can be trusted:
 * - an answer is cached only once the follower has a cursor, and only when no
 *   change touched its workspace (nor the enforcement mode) while it was being
 *   fetched: each workspace has a generation, bumped by every change about it,
 *   and an answer fetched under an older generation is given once, not cached;
 * - the follower resumes from its cursor after any outage, so no change is
 *   missed: an `entitlement` change drops its workspace's answers, an
 *   `enforcement` change (or one of a kind this client does not know) drops all;
 * - the follower has heard from billhook — and caught up — within
 *   `maxStalenessMs`; after that, nothing cached is trusted until it has again.
 *
 * Without a follower (`follow: false`) an answer is trusted for
 * `maxStalenessMs` after it was fetched.
 *
 * What is *known* outlives the cache: the last answers and changes stay for the
 * outage policy (`policy.ts`), aged from when billhook last confirmed them.
 */

import { seatsOf, type Change, type ChangePage, type Check, type EntitlementAnswer } from "./answers.js";
import {
  fallbackCheck,
  fallbackEntitlement,
  knownFromEntitlement,
  type Known,
  type Policy,
} from "./policy.js";
import type { EnforcementMode } from "./types.js";

/** Taken before asking billhook; the answer is cached only if it still matches. */
export interface Token {
  readonly workspace: string;
  readonly epoch: number;
  readonly started: boolean;
  readonly generation: number;
  readonly globalGeneration: number;
}

interface Entry {
  readonly check: Check;
  readonly fetchedAt: number;
}

interface KnownEntry {
  readonly known: Known;
  readonly learnedAt: number;
  /** The follower epoch that has tracked it since; null: learned while untracked. */
  readonly epoch: number | null;
}

export interface StateOptions {
  readonly follow: boolean;
  readonly maxStalenessMs: number;
  readonly policy: Policy;
  readonly lastKnownMaxAgeMs: number;
  readonly freeActions: Iterable<string>;
  readonly clock: () => number;
}

/** A check's key within its workspace: action and seats in use. */
function key(action: string, seatsInUse: number | undefined): string {
  return seatsInUse === undefined ? `${action}\n` : `${action}\n${seatsInUse}`;
}

export class ClientState {
  private readonly follow: boolean;
  private readonly maxStalenessMs: number;
  private readonly policy: Policy;
  private readonly maxAgeMs: number;
  private readonly free: ReadonlySet<string>;
  private readonly clock: () => number;
  private readonly checks = new Map<string, Map<string, Entry>>();
  private readonly entitlements = new Map<string, { answer: EntitlementAnswer; fetchedAt: number }>();
  private readonly generations = new Map<string, number>();
  private globalGeneration = 0;
  /** Bumped when the follower loses its place (its cursor refused): nothing is tracked then. */
  private epoch = 0;
  private started = false;
  private heard: number | null = null;
  /** With a follower: nothing is trusted until it has caught up once. */
  private freshUntil: number;
  /** Per entry: how long after its fetch it is trusted (for ever with a follower). */
  private readonly ttl: number;
  private readonly known = new Map<string, KnownEntry>();
  private enforcement: EnforcementMode | null = null;
  private defaultFeatures: ReadonlySet<string> = new Set();

  constructor(options: StateOptions) {
    this.follow = options.follow;
    this.maxStalenessMs = options.maxStalenessMs;
    this.policy = options.policy;
    this.maxAgeMs = options.lastKnownMaxAgeMs;
    this.free = new Set(options.freeActions);
    this.clock = options.clock;
    this.freshUntil = options.follow ? -Infinity : Infinity;
    this.ttl = options.follow ? Infinity : options.maxStalenessMs;
  }

  // -- the cache -------------------------------------------------------------------------

  /** billhook's cached answer, when it can be trusted now; else null (ask billhook). */
  cachedCheck(workspace: string, action: string, seatsInUse: number | undefined): Check | null {
    const entry = this.checks.get(workspace)?.get(key(action, seatsInUse));
    if (entry === undefined) return null;
    const now = this.clock();
    if (now > this.freshUntil || now > entry.fetchedAt + this.ttl) return null;
    return entry.check;
  }

  cachedEntitlement(workspace: string): EntitlementAnswer | null {
    const entry = this.entitlements.get(workspace);
    if (entry === undefined) return null;
    const now = this.clock();
    if (now > this.freshUntil || now > entry.fetchedAt + this.ttl) return null;
    return entry.answer;
  }

  token(workspace: string): Token {
    return {
      workspace,
      epoch: this.epoch,
      started: this.started || !this.follow,
      generation: this.generations.get(workspace) ?? 0,
      globalGeneration: this.globalGeneration,
    };
  }

  private current(token: Token): boolean {
    const now = this.token(token.workspace);
    return (
      token.started &&
      token.epoch === now.epoch &&
      token.generation === now.generation &&
      token.globalGeneration === now.globalGeneration
    );
  }

  /** Cache billhook's answer to a check, unless a change overtook it while it was fetched. */
  storeCheck(token: Token, action: string, seatsInUse: number | undefined, check: Check): void {
    if (this.enforcement === null && check.enforcement !== null) this.enforcement = check.enforcement;
    if (!this.current(token)) return;
    if (check.enforcement !== null) this.enforcement = check.enforcement;
    let byWorkspace = this.checks.get(token.workspace);
    if (byWorkspace === undefined) {
      byWorkspace = new Map();
      this.checks.set(token.workspace, byWorkspace);
    }
    byWorkspace.set(key(action, seatsInUse), { check, fetchedAt: this.clock() });
  }

  /** Remember billhook's answer (for the policy) and cache it unless overtaken. */
  storeEntitlement(token: Token, entitlement: EntitlementAnswer): void {
    const now = this.clock();
    const ws = token.workspace;
    const current = this.current(token);
    if (entitlement.source === "default") this.defaultFeatures = new Set(entitlement.features.included);
    if (current || !this.known.has(ws)) {
      const tracked = current && this.follow ? this.epoch : null;
      this.known.set(ws, { known: knownFromEntitlement(entitlement), learnedAt: now, epoch: tracked });
    }
    if (this.enforcement === null || current) this.enforcement = entitlement.enforcement;
    if (current) this.entitlements.set(ws, { answer: entitlement, fetchedAt: now });
  }

  // -- the follower ----------------------------------------------------------------------

  /** Apply one page of the feed; `caughtUp`: it was the last one for now. */
  apply(page: ChangePage, caughtUp: boolean): void {
    const now = this.clock();
    for (const change of page.changes) this.applyOne(change, now);
    this.started = true;
    if (caughtUp) {
      this.heard = now;
      this.freshUntil = now + this.maxStalenessMs;
    }
  }

  private applyOne(change: Change, now: number): void {
    if (change.kind === "entitlement" && "workspace_id" in change && typeof change.workspace_id === "string") {
      const c = change as Extract<Change, { kind: "entitlement" }>;
      const ws = c.workspace_id;
      this.generations.set(ws, (this.generations.get(ws) ?? 0) + 1);
      this.checks.delete(ws);
      this.entitlements.delete(ws);
      if (c.source === "default") this.defaultFeatures = new Set(c.features.included);
      const known: Known = {
        tier: c.tier,
        included: new Set(c.features.included),
        seats: seatsOf(c.seats),
        nextAction: c.next_action,
        asOfSeq: c.seq,
        entitlement: null,
      };
      this.known.set(ws, { known, learnedAt: now, epoch: this.epoch });
      return;
    }
    this.globalGeneration += 1;
    this.checks.clear();
    this.entitlements.clear();
    if (change.kind === "enforcement" && "enforcement" in change) this.enforcement = change.enforcement;
  }

  /**
   * The follower lost its place (billhook refused its cursor): it starts again
   * at the head, and nothing learned so far is tracked any more.
   */
  reset(): void {
    this.epoch += 1;
    this.started = false;
    this.heard = null;
    this.freshUntil = -Infinity;
    this.checks.clear();
    this.entitlements.clear();
    for (const [ws, entry] of this.known) this.known.set(ws, { ...entry, epoch: null });
  }

  /** When (by the client's clock) the follower last caught up with billhook. */
  get heardAt(): number | null {
    return this.heard;
  }

  // -- the outage policy -----------------------------------------------------------------

  /**
   * Ms since billhook last confirmed something learned at `learnedAt`: a
   * tracked fact is confirmed again each time the follower catches up.
   */
  private age(learnedAt: number, epoch: number | null): number {
    let confirmed = learnedAt;
    if (epoch === this.epoch && this.heard !== null) confirmed = Math.max(confirmed, this.heard);
    return Math.max(0, this.clock() - confirmed);
  }

  fallbackCheck(workspace: string, action: string, seatsInUse: number | undefined, reason: string): Check {
    const entry = this.checks.get(workspace)?.get(key(action, seatsInUse)) ?? null;
    const known = this.known.get(workspace) ?? null;
    const tracked = this.follow ? this.epoch : null;
    return fallbackCheck(this.policy, this.maxAgeMs, workspace, action, seatsInUse, reason, {
      cached: entry?.check ?? null,
      cachedAge: entry === null ? Infinity : this.age(entry.fetchedAt, tracked),
      known: known?.known ?? null,
      knownAge: known === null ? Infinity : this.age(known.learnedAt, known.epoch),
      enforcement: this.enforcement,
      free: new Set([...this.defaultFeatures, ...this.free]),
    });
  }

  fallbackEntitlement(workspace: string, reason: string): EntitlementAnswer {
    const known = this.known.get(workspace) ?? null;
    const age = known === null ? Infinity : this.age(known.learnedAt, known.epoch);
    return fallbackEntitlement(this.policy, this.maxAgeMs, reason, known?.known ?? null, age);
  }
}
