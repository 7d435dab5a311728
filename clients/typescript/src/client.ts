/**
 * `Billhook`: billhook's answers, cached and kept fresh by the change feed, with
 * an outage policy (docs/clients.md). The Python client's semantics, on `fetch`.
 *
 *   const bh = new Billhook({ baseUrl, token, fail: "last_known" });
 *   if ((await bh.check("ws_1", "ai_imports")).allowed) { ... }
 *   const denied = await bh.requireFeature("ws_1", "ai_imports"); // null, or a 402/503 Response
 *   await bh.close();
 */

import {
  MAX_LIMIT,
  MAX_WAIT_S,
  Outage,
  answered,
  type Answered,
  changesQuery,
  checkBody,
  checkFrom,
  entitlementFrom,
  pageFrom,
  workspacePath,
  type Change,
  type ChangePage,
  type Check,
  type EntitlementAnswer,
} from "./answers.js";
import {
  BillhookClientError,
  BillhookUnavailable,
  BillingRequired,
  BillingUnavailable,
  InvalidRequest,
} from "./errors.js";
import { denialResponse } from "./guard.js";
import { POLICIES, type Policy } from "./policy.js";
import { ClientState } from "./state.js";

/** The follower's page size: the largest, so an outage is caught up in few requests. */
const FOLLOW_LIMIT = MAX_LIMIT;
/** The follower's longest long poll (s); under billhook's 30 s cap, with room for a proxy's. */
const FOLLOW_WAIT_S = 25;
/** After a failed poll the follower waits this long, doubling up to FOLLOW_BACKOFF_MAX_MS. */
const FOLLOW_BACKOFF_MS = 250;
const FOLLOW_BACKOFF_MAX_MS = 5_000;
/** With a long poll of 0 s (a tiny maxStalenessMs) the follower pauses this long between polls. */
const FOLLOW_IDLE_MS = 200;

export type FetchLike = (input: string, init: RequestInit) => Promise<Response>;

export interface BillhookOptions {
  /** Where billhook answers, e.g. `http://billhook:8000`. */
  baseUrl: string;
  /** A bearer token of read scope. */
  token: string;
  /** The outage policy (default `closed`). */
  fail?: Policy;
  /** How old a last known answer `last_known` (and `open`, for entitlements) may give (default 15 min). */
  lastKnownMaxAgeMs?: number;
  /** The cache is trusted while the follower caught up within this (default 60 s). */
  maxStalenessMs?: number;
  /** Follow the change feed (default true). False: each answer is trusted for `maxStalenessMs`. */
  follow?: boolean;
  /** How long a request may take before billhook counts as not answering (default 3 s). */
  timeoutMs?: number;
  /** Actions `closed` always allows (the default tier's features are learned from answers too). */
  freeActions?: Iterable<string>;
  /** The `fetch` to call (default the global one); tests count requests through it. */
  fetch?: FetchLike;
  /** Sees every change the follower applies; keep it quick. Its errors are ignored. */
  onChange?: (change: Change) => void;
  /** Where the follower reports that the feed stopped or resumed answering (default `console`). */
  logger?: { warn(message: string): void };
  /** The clock, in ms (default `performance.now`). */
  clock?: () => number;
}

export interface CheckOptions {
  /** Required for `invite_member`: the seats in use now. */
  seatsInUse?: number;
}

export interface ChangesOptions {
  /** A cursor; undefined: from the first change; "now": the head. */
  after?: string;
  /** 1–1000 (default 100). */
  limit?: number;
  /** Long poll, 0–30 s (default 0). */
  wait?: number;
}

function positive(name: string, value: number): number {
  if (!(value > 0)) throw new RangeError(`${name} must be positive`);
  return value;
}

/** What a failed poll is called in a log line: a reason or an error code, never a body. */
function failureReason(e: unknown): string {
  if (e instanceof BillhookUnavailable) return e.reason;
  if (e instanceof BillhookClientError && e.error !== null) return `${e.status}:${e.error}`;
  return e instanceof Error ? e.name : "error";
}

/**
 * A billhook client with a cache kept fresh by the change feed. The follower
 * starts with the client; `close()` stops it (until then a Node process stays alive).
 */
export class Billhook {
  readonly policy: Policy;
  private readonly baseUrl: string;
  private readonly headers: Record<string, string>;
  private readonly timeoutMs: number;
  private readonly pollWaitS: number;
  private readonly fetcher: FetchLike;
  private readonly state: ClientState;
  private readonly onChange: ((change: Change) => void) | undefined;
  private readonly logger: { warn(message: string): void };
  private readonly stop = new AbortController();
  private followerCursor: string | null = null;
  private readonly follower: Promise<void> | null = null;

  constructor(options: BillhookOptions) {
    const fail = options.fail ?? "closed";
    if (!POLICIES.includes(fail)) throw new RangeError(`fail must be one of ${POLICIES.join(", ")}`);
    this.policy = fail;
    this.baseUrl = options.baseUrl.replace(/\/+$/, "");
    this.headers = { authorization: `Bearer ${options.token}`, accept: "application/json" };
    this.timeoutMs = positive("timeoutMs", options.timeoutMs ?? 3_000);
    const maxStalenessMs = positive("maxStalenessMs", options.maxStalenessMs ?? 60_000);
    const follow = options.follow ?? true;
    // A healthy follower reports in well before its cache stops being trusted.
    this.pollWaitS = Math.max(0, Math.min(FOLLOW_WAIT_S, MAX_WAIT_S, Math.floor(maxStalenessMs / 2000)));
    // The global fetch is called unbound: some runtimes (Workers) refuse another `this`.
    this.fetcher = options.fetch ?? ((input, init) => globalThis.fetch(input, init));
    this.onChange = options.onChange;
    this.logger = options.logger ?? console;
    this.state = new ClientState({
      follow,
      maxStalenessMs,
      policy: fail,
      lastKnownMaxAgeMs: positive("lastKnownMaxAgeMs", options.lastKnownMaxAgeMs ?? 900_000),
      freeActions: options.freeActions ?? [],
      clock: options.clock ?? (() => performance.now()),
    });
    if (follow) this.follower = this.follow();
  }

  // -- answers ---------------------------------------------------------------------------

  /**
   * May `workspace` do `action` now? billhook's answer, cached, or the policy's.
   * A denial is an answer (`allowed: false`), not an error. Throws UnknownAction,
   * InvalidRequest, Unauthorized, Forbidden for what billhook refused.
   */
  async check(workspace: string, action: string, options: CheckOptions = {}): Promise<Check> {
    const seats = options.seatsInUse;
    const cached = this.state.cachedCheck(workspace, action, seats);
    if (cached !== null) return cached;
    const token = this.state.token(workspace);
    let check: Check;
    try {
      const response = await this.request(workspacePath(workspace, "check"), {
        method: "POST",
        body: checkBody(action, seats),
        headers: { ...this.headers, "content-type": "application/json" },
      });
      check = checkFrom(answered(response, [200, 402]), response.status);
    } catch (e) {
      if (e instanceof Outage) return this.state.fallbackCheck(workspace, action, seats, e.reason);
      throw e;
    }
    this.state.storeCheck(token, action, seats, check);
    return check;
  }

  /** billhook's cached answer when the cache can be trusted now, else null (no request). */
  cachedCheck(workspace: string, action: string, options: CheckOptions = {}): Check | null {
    return this.state.cachedCheck(workspace, action, options.seatsInUse);
  }

  /**
   * The check's answer when the action is allowed; else throws BillingRequired
   * (billhook's 402) or BillingUnavailable (the outage policy denied it).
   */
  async require(workspace: string, action: string, options: CheckOptions = {}): Promise<Check> {
    const check = await this.check(workspace, action, options);
    if (check.allowed) return check;
    throw check.billingRequired ? new BillingRequired(check) : new BillingUnavailable(check);
  }

  /**
   * null when `workspace` may do `action` now (or `observe` would only have
   * denied it); else the Response that stops the request: 402 with billhook's
   * own `billing_required` body, or 503 `billing_unavailable` when the outage
   * policy denied it.
   */
  async requireFeature(workspace: string, action: string, options: CheckOptions = {}): Promise<Response | null> {
    return denialResponse(await this.check(workspace, action, options));
  }

  /**
   * What the workspace is entitled to now (`GET .../entitlements`), cached. When
   * billhook cannot answer: the last known answer (marked `fallback`) under
   * `open` and `last_known` while young enough; else throws BillhookUnavailable.
   */
  async entitlements(workspace: string): Promise<EntitlementAnswer> {
    const cached = this.state.cachedEntitlement(workspace);
    if (cached !== null) return cached;
    const token = this.state.token(workspace);
    let entitlement: EntitlementAnswer;
    try {
      const response = await this.request(workspacePath(workspace, "entitlements"), {
        method: "GET",
        headers: this.headers,
      });
      entitlement = entitlementFrom(answered(response, [200]));
    } catch (e) {
      if (e instanceof Outage) return this.state.fallbackEntitlement(workspace, e.reason);
      throw e;
    }
    this.state.storeEntitlement(token, entitlement);
    return entitlement;
  }

  /** One page of the change feed. Throws BillhookUnavailable when billhook does not answer. */
  async changes(options: ChangesOptions = {}): Promise<ChangePage> {
    const wait = options.wait ?? 0;
    return this.page(changesQuery(options.after, options.limit ?? 100, wait), wait, null);
  }

  // -- the follower ----------------------------------------------------------------------

  /** The follower's cursor: where it resumes (null before its first answer). */
  get cursor(): string | null {
    return this.followerCursor;
  }

  /** When (by `clock`) the follower last caught up with billhook. */
  get heardAt(): number | null {
    return this.state.heardAt;
  }

  /** Stop the follower (its long poll in flight is aborted). Answers still work, uncached. */
  async close(): Promise<void> {
    this.stop.abort();
    await this.follower;
  }

  private async follow(): Promise<void> {
    let backoff = FOLLOW_BACKOFF_MS;
    let failing: string | null = null;
    while (!this.stop.signal.aborted) {
      let page: ChangePage;
      try {
        const query = changesQuery(this.followerCursor ?? "now", FOLLOW_LIMIT, this.pollWaitS);
        page = await this.page(query, this.pollWaitS, this.stop.signal);
      } catch (e) {
        if (this.stop.signal.aborted) break;
        if (e instanceof InvalidRequest) {
          // The cursor is refused (billhook's data was reset): start again at the head.
          this.logger.warn("billhook-client: the change feed refused the cursor; following from the head");
          this.state.reset();
          this.followerCursor = null;
          continue;
        }
        // billhook down or refusing: the cache goes stale.
        const reason = failureReason(e);
        if (reason !== failing) {
          this.logger.warn(`billhook-client: the change feed did not answer: ${reason}`);
          failing = reason;
        }
        await this.sleep(backoff);
        backoff = Math.min(backoff * 2, FOLLOW_BACKOFF_MAX_MS);
        continue;
      }
      failing = null;
      backoff = FOLLOW_BACKOFF_MS;
      const caughtUp = page.changes.length < FOLLOW_LIMIT;
      this.state.apply(page, caughtUp);
      this.followerCursor = page.next;
      this.notify(page.changes);
      if (caughtUp && this.pollWaitS === 0) await this.sleep(FOLLOW_IDLE_MS);
    }
  }

  private notify(changes: readonly Change[]): void {
    if (this.onChange === undefined) return;
    for (const change of changes) {
      try {
        this.onChange(change);
      } catch (e) {
        this.logger.warn(`billhook-client: onChange failed: ${e instanceof Error ? e.name : "error"}`);
      }
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.stop.signal.removeEventListener("abort", done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.stop.signal.addEventListener("abort", done);
    });
  }

  // -- requests --------------------------------------------------------------------------

  private async page(query: string, waitS: number, signal: AbortSignal | null): Promise<ChangePage> {
    try {
      const response = await this.request(query, { method: "GET", headers: this.headers }, waitS * 1000, signal);
      return pageFrom(answered(response, [200]));
    } catch (e) {
      if (e instanceof Outage) throw new BillhookUnavailable(e.reason);
      throw e;
    }
  }

  /**
   * `fetch`, with the client's timeout (plus `extraMs` for a long poll); a
   * failure to answer becomes Outage (`timeout` or `unreachable`).
   */
  private async request(
    path: string,
    init: RequestInit,
    extraMs = 0,
    signal: AbortSignal | null = null,
  ): Promise<Answered> {
    const controller = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      controller.abort();
    }, this.timeoutMs + extraMs);
    const abort = (): void => controller.abort();
    signal?.addEventListener("abort", abort);
    try {
      // The timer stays until the body is read: a body that stalls is a timeout too.
      const response = await this.fetcher(`${this.baseUrl}${path}`, { ...init, signal: controller.signal });
      return { status: response.status, text: await response.text() };
    } catch (e) {
      if (e instanceof BillhookClientError) throw e;
      throw new Outage(timedOut ? "timeout" : "unreachable");
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", abort);
    }
  }
}
