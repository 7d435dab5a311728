/** billhook-client: billhook's entitlement answers for TypeScript (docs/clients.md). */

export { Billhook } from "./client.js";
export type { BillhookOptions, ChangesOptions, CheckOptions, FetchLike } from "./client.js";
export type { Change, ChangePage, Check, EntitlementAnswer, UnknownChange } from "./answers.js";
export { SEAT_ACTION } from "./answers.js";
export {
  BillhookClientError,
  BillhookUnavailable,
  BillingRequired,
  BillingUnavailable,
  Forbidden,
  InvalidRequest,
  Unauthorized,
  UnexpectedAnswer,
  UnknownAction,
} from "./errors.js";
export { denialResponse } from "./guard.js";
export { POLICIES } from "./policy.js";
export type { Policy } from "./policy.js";
export { WEBHOOK_TOLERANCE_S, WebhookVerificationError, verifyWebhook } from "./webhooks.js";
export type { VerifyOptions, WebhookHeaders } from "./webhooks.js";
export type * from "./types.js";
