/**
 * The outage policy: what a check answers when billhook cannot (docs/clients.md).
 *
 * Pure functions of what the client knows; `state.ts` gathers it. Every answer
 * made here has `fallback: true` and the reason billhook did not answer
 * (`unreachable`, `timeout`, `server_error:<status>`).
 *
 * - `closed`: only the default tier's features (learned from any answer about a
 *   workspace on the default tier, plus the caller's `freeActions`) are allowed;
 *   every other action, `invite_member` included, is denied.
 * - `open`: every action is allowed.
 * - `last_known`: billhook's last known answer while it is at most
 *   `lastKnownMaxAgeMs` old — the cached check answer itself, else one derived
 *   from the workspace's last known features and seats — then `closed`.
 *
 * A denial respects the last known enforcement mode: under `observe` it is
 * `allowed: true, decision: "would_deny"` (billhook itself would not block),
 * under `disabled` an `allow`. With no mode known, `enforce` is assumed.
 */

import { SEAT_ACTION, asFallback, type Check, type EntitlementAnswer } from "./answers.js";
import { BillhookUnavailable } from "./errors.js";
import type { EnforcementMode } from "./types.js";

/** The policies a caller may pick. */
export const POLICIES = ["closed", "open", "last_known"] as const;
export type Policy = (typeof POLICIES)[number];

/**
 * What the client last knew of one workspace: from its entitlement answer or a
 * change. `included` null: only a check answer was ever seen; `seats` null:
 * unlimited; `entitlement`: billhook's last full answer, null once a change
 * superseded it.
 */
export interface Known {
  readonly tier: string | null;
  readonly included: ReadonlySet<string> | null;
  readonly seats: number | null;
  readonly nextAction: string | null;
  readonly asOfSeq: number | null;
  readonly entitlement: EntitlementAnswer | null;
}

/** What a policy may go on, with ages (ms since billhook last confirmed it). */
export interface Basis {
  readonly cached: Check | null;
  readonly cachedAge: number;
  readonly known: Known | null;
  readonly knownAge: number;
  readonly enforcement: EnforcementMode | null;
  readonly free: ReadonlySet<string>;
}

function answer(
  workspace: string,
  action: string,
  permitted: boolean,
  mode: EnforcementMode,
  basis: Basis,
  reason: string,
): Check {
  let allowed = true;
  let decision: Check["decision"] = "allow";
  if (!permitted && mode === "observe") decision = "would_deny";
  else if (!permitted && mode === "enforce") {
    allowed = false;
    decision = "deny";
  }
  const known = basis.known;
  return Object.freeze({
    workspaceId: workspace,
    action,
    allowed,
    decision,
    reason: null,
    requiredTier: null,
    tier: known?.tier ?? null,
    nextAction: known?.nextAction ?? null,
    enforcement: mode,
    asOfSeq: known?.asOfSeq ?? null,
    fallback: true,
    fallbackReason: reason,
    billingRequired: false,
    status: null,
    body: null,
    answer: null,
  });
}

/** The policy's answer to a check billhook could not answer (`reason` says why). */
export function fallbackCheck(
  policy: Policy,
  maxAgeMs: number,
  workspace: string,
  action: string,
  seatsInUse: number | undefined,
  reason: string,
  basis: Basis,
): Check {
  const mode = basis.enforcement ?? "enforce";
  if (policy === "open") return answer(workspace, action, true, mode, basis, reason);
  if (policy === "last_known") {
    if (basis.cached !== null && basis.cachedAge <= maxAgeMs) return asFallback(basis.cached, reason);
    const known = basis.known;
    if (known !== null && known.included !== null && basis.knownAge <= maxAgeMs) {
      const permitted =
        action === SEAT_ACTION
          ? known.seats === null || (seatsInUse !== undefined && seatsInUse + 1 <= known.seats)
          : known.included.has(action) || basis.free.has(action);
      return answer(workspace, action, permitted, mode, basis, reason);
    }
  }
  const permitted = action !== SEAT_ACTION && basis.free.has(action);
  return answer(workspace, action, permitted, mode, basis, reason);
}

/**
 * The policy's answer to an entitlement read billhook could not answer: under
 * `open` and `last_known`, billhook's last full answer while at most `maxAgeMs`
 * old. Otherwise there is nothing honest to answer: throws BillhookUnavailable
 * (`closed` never hands out a paid workspace's old features).
 */
export function fallbackEntitlement(
  policy: Policy,
  maxAgeMs: number,
  reason: string,
  known: Known | null,
  age: number,
): EntitlementAnswer {
  const entitlement = known?.entitlement ?? null;
  if (policy !== "closed" && entitlement !== null && age <= maxAgeMs) {
    return asFallback(entitlement, reason);
  }
  throw new BillhookUnavailable(reason);
}

export function knownFromEntitlement(e: EntitlementAnswer): Known {
  return {
    tier: e.tier,
    included: new Set(e.features.included),
    seats: e.seats,
    nextAction: e.nextAction,
    asOfSeq: e.asOfSeq,
    entitlement: e.fallback ? Object.freeze({ ...e, fallback: false, fallbackReason: null }) : e,
  };
}
