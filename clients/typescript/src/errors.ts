/**
 * The client's errors: one root, a few meaningful subclasses (the Python client's).
 *
 * `fetch`'s own errors never leave the client: a billhook that cannot answer
 * (connection refused, timeout, 5xx) is the outage policy's business, and an
 * answer billhook gave is one of these.
 */

import type { Check } from "./answers.js";

/**
 * Root of every error the client throws. `status` is the HTTP status billhook
 * answered (null when it did not answer), `error` its error code, `detail` its
 * message for a person.
 */
export class BillhookClientError extends Error {
  readonly detail: string;
  readonly status: number | null;
  readonly error: string | null;

  constructor(detail: string, status: number | null = null, error: string | null = null) {
    super(detail);
    this.name = new.target.name;
    this.detail = detail;
    this.status = status;
    this.error = error;
  }
}

/** 401: the token is missing or unknown to billhook. */
export class Unauthorized extends BillhookClientError {}

/** 403: the token's scope does not allow the route. */
export class Forbidden extends BillhookClientError {}

/** 400: billhook refused the request (a field is missing or malformed). */
export class InvalidRequest extends BillhookClientError {}

/** 400 `unknown_action`: the action is neither a configured feature nor `invite_member`. */
export class UnknownAction extends InvalidRequest {}

/** billhook answered something this client does not understand (a status or a shape). */
export class UnexpectedAnswer extends BillhookClientError {}

/**
 * billhook could not answer and the outage policy has no answer to give
 * instead. `reason` is `unreachable`, `timeout` or `server_error:<status>`.
 */
export class BillhookUnavailable extends BillhookClientError {
  readonly reason: string;

  constructor(reason: string) {
    super(`billhook did not answer (${reason})`, null, "unavailable");
    this.reason = reason;
  }
}

/**
 * billhook denied the action: its 402 `billing_required` answer. `check.body`
 * is the answer's exact text (what a guard sends on to the UI).
 */
export class BillingRequired extends BillhookClientError {
  readonly check: Check;

  constructor(check: Check) {
    super(check.answer !== null && "detail" in check.answer ? check.answer.detail : "billing required", 402, "billing_required");
    this.check = check;
  }
}

/**
 * The outage policy denied the action: billhook could not answer. Not a 402:
 * nothing says the workspace must pay, only that billhook could not be asked.
 */
export class BillingUnavailable extends BillhookClientError {
  readonly check: Check;

  constructor(check: Check) {
    const reason = check.fallbackReason ?? "unavailable";
    super(
      `billhook did not answer (${reason}); the outage policy denies ${check.action}`,
      null,
      "billing_unavailable",
    );
    this.check = check;
  }
}
