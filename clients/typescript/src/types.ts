/**
 * billhook's answers on the wire, as `/openapi.json` describes them (docs/api.md).
 *
 * Written by hand; test/openapi.test.ts checks every interface named after a
 * component schema against billhook's own document, property for property.
 */

/** The enforcement mode: what a denial does (docs/api.md). */
export type EnforcementMode = "disabled" | "observe" | "enforce";

/** A check's decision: `would_deny` is allowed (observe), but enforce would deny. */
export type Decision = "allow" | "would_deny" | "deny";

/** Why a check denies (or would). */
export type DenialReason = "tier_required" | "billing_attention" | "seat_limit";

/** Where a workspace's tier comes from. */
export type Source =
  | "default"
  | "site_owner_override"
  | "enterprise_contract"
  | "stripe"
  | "polar"
  | "manual_pilot"
  | "explicit_solo";

/** `POST /v1/workspaces/{id}/check` → 200: allowed, or would be denied (observe). */
export interface CheckAnswer {
  workspace_id: string;
  action: string;
  allowed: boolean;
  decision: Decision;
  reason: DenialReason | null;
  required_tier: string | null;
  tier: string;
  next_action: string;
  enforcement: EnforcementMode;
  as_of_seq: number;
}

/** `POST /v1/workspaces/{id}/check` → 402: denied under enforce (`billing_required`). */
export interface CheckDenial {
  workspace_id: string;
  action: string;
  allowed: boolean;
  decision: Decision;
  reason: DenialReason | null;
  required_tier: string | null;
  tier: string;
  next_action: string;
  enforcement: EnforcementMode;
  as_of_seq: number;
  error: "billing_required";
  detail: string;
}

export interface Features {
  included: string[];
  unavailable: string[];
}

/** `null` where it is used: no seat limit. */
export interface Seats {
  purchased: number;
}

export interface Subscription {
  provider: "stripe" | "polar";
  id: string;
  customer: string | null;
  tier: string | null;
  status: string;
  price: string | null;
  interval: string | null;
  current_period_end: string | null;
  cancel_at_period_end: boolean;
  account: string | null;
}

export interface Override {
  kind: string;
  tier: string;
  expires_at: string | null;
  expired: boolean;
  seq: number;
}

/** `GET /v1/workspaces/{id}/entitlements` → 200. */
export interface Entitlement {
  workspace_id: string;
  tier: string;
  source: Source;
  status: string;
  attention: "past_due" | "unpaid" | "incomplete" | null;
  next_action: string;
  features: Features;
  seats: Seats | null;
  subscriptions: Subscription[];
  overrides: Override[];
  problems: string[];
  enforcement: EnforcementMode;
  as_of_seq: number;
}

/** The event that made a change. */
export interface EventCause {
  kind: "event";
  provider: string;
  type: string;
  event_id: string;
}

/** A time rule made the change (an override expiring, a grace period ending). */
export interface TimeCause {
  kind: "time";
}

export interface ChangeFeatures {
  included: string[];
}

/** A workspace's entitlement as `GET .../entitlements` answered it from then on. */
export interface EntitlementChange {
  kind: "entitlement";
  cursor: string;
  workspace_id: string;
  seq: number;
  at: string;
  cause: EventCause | TimeCause;
  tier: string;
  source: Source;
  status: string;
  attention: "past_due" | "unpaid" | "incomplete" | null;
  next_action: string;
  features: ChangeFeatures;
  seats: Seats | null;
}

/** The enforcement mode changed: every workspace's check answers may differ. */
export interface EnforcementChange {
  kind: "enforcement";
  cursor: string;
  workspace_id: null;
  seq: number;
  at: string;
  cause: EventCause;
  enforcement: EnforcementMode;
}

/** `GET /v1/changes` → 200: changes oldest first, and the cursor to read on from. */
export interface Changes {
  changes: Array<EntitlementChange | EnforcementChange>;
  next: string;
}

/** Every error answer: `{"error", "detail"}`. */
export interface ErrorAnswer {
  error: string;
  detail: string;
}
