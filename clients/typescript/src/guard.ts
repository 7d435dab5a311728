/**
 * The guard's answers, for any handler that speaks `Request`/`Response` (a
 * Cloudflare Worker, Deno, Bun, Hono, Next.js route handlers...).
 *
 * Denied by billhook (enforcement `enforce`): 402 with billhook's own
 * `billing_required` body, exactly as billhook sent it. Under `observe` the call
 * goes through (`would_deny`). When billhook cannot answer and the outage policy
 * denies: 503 `billing_unavailable` — not a 402, since nothing says the
 * workspace must pay.
 */

import type { Check } from "./answers.js";

const JSON_HEADERS = { "content-type": "application/json" };

/** The Response that stops the request, or null when the call may go through. */
export function denialResponse(check: Check): Response | null {
  if (check.allowed) return null;
  if (check.billingRequired && check.body !== null) {
    return new Response(check.body, { status: 402, headers: JSON_HEADERS });
  }
  const body = {
    error: "billing_unavailable",
    detail: "billhook could not be asked; the outage policy denies this action",
    workspace_id: check.workspaceId,
    action: check.action,
    fallback_reason: check.fallbackReason,
  };
  return new Response(JSON.stringify(body), { status: 503, headers: JSON_HEADERS });
}
