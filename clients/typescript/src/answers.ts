/**
 * What the client answers (`Check`, `EntitlementAnswer`), and how billhook's
 * HTTP answers become them: billhook's answer (decoded here), an error billhook
 * gave (thrown as the client's own), or no answer at all — `Outage`, which the
 * outage policy turns into a fallback answer.
 */

import {
  BillhookClientError,
  Forbidden,
  InvalidRequest,
  Unauthorized,
  UnexpectedAnswer,
  UnknownAction,
} from "./errors.js";
import type {
  Changes,
  CheckAnswer,
  CheckDenial,
  Decision,
  DenialReason,
  EnforcementMode,
  Entitlement,
  EnforcementChange,
  EntitlementChange,
  Override,
  Source,
  Subscription,
} from "./types.js";

/** The action billhook gates by seats rather than by feature (docs/api.md). */
export const SEAT_ACTION = "invite_member";
/** The feed's largest page (`limit` 1..1000). */
export const MAX_LIMIT = 1000;
/** The feed's longest long poll, in seconds. */
export const MAX_WAIT_S = 30;

/**
 * A check answer: may `workspaceId` do `action` now? `status` is billhook's
 * HTTP status (200, or 402 for a denial) and `body` its exact text, `answer`
 * the same decoded; all three are null for an answer the outage policy made up.
 * `asOfSeq` is null only when nothing was known.
 */
export interface Check {
  readonly workspaceId: string;
  readonly action: string;
  readonly allowed: boolean;
  readonly decision: Decision;
  readonly reason: DenialReason | null;
  readonly requiredTier: string | null;
  readonly tier: string | null;
  readonly nextAction: string | null;
  readonly enforcement: EnforcementMode | null;
  readonly asOfSeq: number | null;
  readonly fallback: boolean;
  readonly fallbackReason: string | null;
  /** Whether this is billhook's own 402 `billing_required` answer. */
  readonly billingRequired: boolean;
  readonly status: number | null;
  readonly body: string | null;
  readonly answer: CheckAnswer | CheckDenial | null;
}

/**
 * What `GET /v1/workspaces/{id}/entitlements` answers. `seats` null: unlimited.
 * `body` is billhook's exact text and `answer` the same decoded.
 */
export interface EntitlementAnswer {
  readonly workspaceId: string;
  readonly tier: string;
  readonly source: Source;
  readonly status: string;
  readonly attention: string | null;
  readonly nextAction: string;
  readonly features: { readonly included: readonly string[]; readonly unavailable: readonly string[] };
  readonly seats: number | null;
  readonly subscriptions: readonly Subscription[];
  readonly overrides: readonly Override[];
  readonly problems: readonly string[];
  readonly enforcement: EnforcementMode;
  readonly asOfSeq: number;
  readonly fallback: boolean;
  readonly fallbackReason: string | null;
  readonly body: string;
  readonly answer: Entitlement;
}

/** A change of a kind this client does not know: it distrusts every cached answer. */
export interface UnknownChange {
  readonly kind: string;
  readonly cursor: string;
}

export type Change = EntitlementChange | EnforcementChange | UnknownChange;

export interface ChangePage {
  readonly changes: readonly Change[];
  readonly next: string;
}

/** billhook did not answer: `reason` is `unreachable`, `timeout` or `server_error:<n>`. */
export class Outage extends Error {
  constructor(readonly reason: string) {
    super(reason);
  }
}

export function asFallback<T extends { fallback: boolean; fallbackReason: string | null }>(
  answer: T,
  reason: string,
): T {
  return Object.freeze({ ...answer, fallback: true, fallbackReason: reason });
}

export function workspacePath(workspace: string, tail: "entitlements" | "check"): string {
  return `/v1/workspaces/${encodeURIComponent(workspace)}/${tail}`;
}

export function checkBody(action: string, seatsInUse: number | undefined): string {
  return JSON.stringify(seatsInUse === undefined ? { action } : { action, seats_in_use: seatsInUse });
}

/** The query of `GET /v1/changes`; `after` undefined: from the first change, "now": the head. */
export function changesQuery(after: string | undefined, limit: number, wait: number): string {
  if (!Number.isInteger(limit) || limit < 1 || limit > MAX_LIMIT) {
    throw new RangeError(`limit must be within 1..${MAX_LIMIT}`);
  }
  if (!Number.isInteger(wait) || wait < 0 || wait > MAX_WAIT_S) {
    throw new RangeError(`wait must be within 0..${MAX_WAIT_S} seconds`);
  }
  const params = new URLSearchParams({ limit: String(limit), wait: String(wait) });
  if (after !== undefined) params.set("after", after);
  return `/v1/changes?${params.toString()}`;
}

// -- decoding -----------------------------------------------------------------------------

type Json = Record<string, unknown>;

function object(text: string): Json {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UnexpectedAnswer("billhook's answer is not JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new UnexpectedAnswer("billhook's answer is not a JSON object");
  }
  return value as Json;
}

/** Throws UnexpectedAnswer naming the first missing or mistyped key (never a value). */
function need(what: string, a: Json, keys: Record<string, string>): void {
  for (const [key, kinds] of Object.entries(keys)) {
    const value = a[key];
    const kind = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
    if (!(key in a) || !kinds.split("|").includes(kind)) {
      throw new UnexpectedAnswer(`billhook's ${what} answer lacks ${key}`);
    }
  }
}

function errorOf(status: number, text: string): BillhookClientError {
  let error = "unexpected";
  let detail = `billhook answered ${status}`;
  try {
    const a = object(text);
    if (typeof a.error === "string" && typeof a.detail === "string") {
      error = a.error;
      detail = a.detail;
    }
  } catch {
    // not billhook's error shape: the status says it all
  }
  if (status === 401) return new Unauthorized(detail, status, error);
  if (status === 403) return new Forbidden(detail, status, error);
  if (status === 400) {
    return error === "unknown_action"
      ? new UnknownAction(detail, status, error)
      : new InvalidRequest(detail, status, error);
  }
  return new UnexpectedAnswer(detail, status, error);
}

/** An HTTP answer, read whole. */
export interface Answered {
  readonly status: number;
  readonly text: string;
}

/** billhook's answer text when its status is one of `ok`; throws Outage or the client's error. */
export function answered(response: Answered, ok: readonly number[]): string {
  if (response.status >= 500) throw new Outage(`server_error:${response.status}`);
  if (!ok.includes(response.status)) throw errorOf(response.status, response.text);
  return response.text;
}

const CHECK_KEYS = {
  workspace_id: "string",
  action: "string",
  allowed: "boolean",
  decision: "string",
  reason: "string|null",
  required_tier: "string|null",
  tier: "string",
  next_action: "string",
  enforcement: "string",
  as_of_seq: "number",
};

/** The check answer in `text` (a 200 or a 402 denial). */
export function checkFrom(text: string, status: number): Check {
  const a = object(text);
  need("check", a, CHECK_KEYS);
  const answer = a as unknown as CheckAnswer | CheckDenial;
  return Object.freeze({
    workspaceId: answer.workspace_id,
    action: answer.action,
    allowed: answer.allowed,
    decision: answer.decision,
    reason: answer.reason,
    requiredTier: answer.required_tier,
    tier: answer.tier,
    nextAction: answer.next_action,
    enforcement: answer.enforcement,
    asOfSeq: answer.as_of_seq,
    fallback: false,
    fallbackReason: null,
    billingRequired: status === 402,
    status,
    body: text,
    answer,
  });
}

/** The entitlement answer in `text`. */
export function entitlementFrom(text: string): EntitlementAnswer {
  const a = object(text);
  need("entitlement", a, {
    workspace_id: "string",
    tier: "string",
    source: "string",
    status: "string",
    attention: "string|null",
    next_action: "string",
    features: "object",
    seats: "object|null",
    subscriptions: "array",
    overrides: "array",
    problems: "array",
    enforcement: "string",
    as_of_seq: "number",
  });
  const answer = a as unknown as Entitlement;
  need("entitlement", answer.features as unknown as Json, { included: "array", unavailable: "array" });
  return Object.freeze({
    workspaceId: answer.workspace_id,
    tier: answer.tier,
    source: answer.source,
    status: answer.status,
    attention: answer.attention,
    nextAction: answer.next_action,
    features: Object.freeze({
      included: Object.freeze([...answer.features.included]),
      unavailable: Object.freeze([...answer.features.unavailable]),
    }),
    seats: seatsOf(answer.seats),
    subscriptions: answer.subscriptions,
    overrides: answer.overrides,
    problems: answer.problems,
    enforcement: answer.enforcement,
    asOfSeq: answer.as_of_seq,
    fallback: false,
    fallbackReason: null,
    body: text,
    answer,
  });
}

export function seatsOf(seats: { purchased: number } | null): number | null {
  return seats === null ? null : seats.purchased;
}

function changeFrom(c: unknown): Change {
  if (typeof c !== "object" || c === null) throw new UnexpectedAnswer("billhook's changes answer lacks a change");
  const a = c as Json;
  need("changes", a, { kind: "string", cursor: "string" });
  if (a.kind === "entitlement") {
    need("changes", a, {
      workspace_id: "string",
      seq: "number",
      source: "string",
      tier: "string",
      next_action: "string",
      features: "object",
      seats: "object|null",
    });
    need("changes", a.features as Json, { included: "array" });
    return a as unknown as EntitlementChange;
  }
  if (a.kind === "enforcement") {
    need("changes", a, { seq: "number", enforcement: "string" });
    return a as unknown as EnforcementChange;
  }
  return { kind: String(a.kind), cursor: String(a.cursor) };
}

/** The `GET /v1/changes` answer in `text`. */
export function pageFrom(text: string): ChangePage {
  const a = object(text);
  need("changes", a, { changes: "array", next: "string" });
  const page = a as unknown as Changes;
  return Object.freeze({ changes: Object.freeze(page.changes.map(changeFrom)), next: page.next });
}
