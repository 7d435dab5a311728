/**
 * Verify billhook's outbound deliveries, signed with Standard Webhooks
 * (https://www.standardwebhooks.com): `webhook-id`, `webhook-timestamp` (Unix
 * seconds) and `webhook-signature`, space-separated `v1,<base64 HMAC-SHA256 of
 * "{id}.{timestamp}.{body}">` — one per secret while a secret is rotated.
 *
 * Web Crypto only (`crypto.subtle`), so it runs wherever `fetch` does.
 */

/** Deliveries whose timestamp is further than this from now are refused (replays). */
export const WEBHOOK_TOLERANCE_S = 5 * 60;
const SECRET_PREFIX = "whsec_";
const encoder = new TextEncoder();

/** The delivery is not billhook's, or not now: missing headers, a bad signature, an old timestamp. */
export class WebhookVerificationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "WebhookVerificationError";
  }
}

export type WebhookHeaders = Headers | Record<string, string | string[] | undefined>;

export interface VerifyOptions {
  /** The clock, in ms since the epoch (default `Date.now`). */
  now?: () => number;
  /** How far the timestamp may be from now, in seconds (default 300). */
  toleranceS?: number;
}

function header(headers: WebhookHeaders, name: string): string | undefined {
  if (headers instanceof Headers) return headers.get(name) ?? undefined;
  for (const [key, value] of Object.entries(headers)) {
    if (key.toLowerCase() === name) return Array.isArray(value) ? value.join(" ") : value;
  }
  return undefined;
}

function base64Bytes(text: string): Uint8Array {
  const binary = atob(text);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  return bytes;
}

/** The HMAC key of a `whsec_<base64>` secret (unpadded base64 accepted, as the reference libraries do). */
function secretKey(secret: string): Uint8Array {
  let text = secret.startsWith(SECRET_PREFIX) ? secret.slice(SECRET_PREFIX.length) : secret;
  text = text.replace(/=+$/, "");
  text += "=".repeat((4 - (text.length % 4)) % 4);
  let key: Uint8Array;
  try {
    key = base64Bytes(text);
  } catch {
    throw new TypeError("a webhook secret is whsec_ followed by base64");
  }
  if (key.length === 0) throw new TypeError("a webhook secret may not be empty");
  return key;
}

function bodyBytes(body: string | ArrayBuffer | Uint8Array): Uint8Array {
  if (typeof body === "string") return encoder.encode(body);
  return body instanceof Uint8Array ? body : new Uint8Array(body);
}

/** Equal without an early exit, so the time taken says nothing about where they differ. */
function constantTimeEqual(a: Uint8Array, b: Uint8Array): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ (b[i % Math.max(b.length, 1)] ?? 0);
  return diff === 0;
}

async function hmac(key: Uint8Array, data: Uint8Array): Promise<Uint8Array> {
  const cryptoKey = await crypto.subtle.importKey("raw", key as BufferSource, { name: "HMAC", hash: "SHA-256" }, false, [
    "sign",
  ]);
  return new Uint8Array(await crypto.subtle.sign("HMAC", cryptoKey, data as BufferSource));
}

/**
 * Check that `body` (the raw request body, exactly as received) was signed by
 * billhook with `secret` (or one of `secrets`, while you rotate yours) within
 * the tolerance; answers the parsed JSON payload. Throws WebhookVerificationError
 * otherwise — answer such a delivery 400/401 and do not act on it.
 */
export async function verifyWebhook<T = unknown>(
  body: string | ArrayBuffer | Uint8Array,
  headers: WebhookHeaders,
  secret: string | readonly string[],
  options: VerifyOptions = {},
): Promise<T> {
  const id = header(headers, "webhook-id");
  const timestamp = header(headers, "webhook-timestamp");
  const signatures = header(headers, "webhook-signature");
  if (!id || !timestamp || !signatures) throw new WebhookVerificationError("missing required headers");
  if (!/^[0-9]{1,12}$/.test(timestamp)) throw new WebhookVerificationError("invalid timestamp");
  const now = Math.floor((options.now ?? Date.now)() / 1000);
  const tolerance = options.toleranceS ?? WEBHOOK_TOLERANCE_S;
  const sent = Number(timestamp);
  if (sent < now - tolerance) throw new WebhookVerificationError("message timestamp too old");
  if (sent > now + tolerance) throw new WebhookVerificationError("message timestamp too new");

  const payload = bodyBytes(body);
  const prefix = encoder.encode(`${id}.${timestamp}.`);
  const signed = new Uint8Array(prefix.length + payload.length);
  signed.set(prefix);
  signed.set(payload, prefix.length);
  const keys = (typeof secret === "string" ? [secret] : secret).map(secretKey);
  if (keys.length === 0) throw new TypeError("no webhook secret given");
  const expected = await Promise.all(keys.map((key) => hmac(key, signed)));

  let matched = false;
  for (const versioned of signatures.split(" ")) {
    const comma = versioned.indexOf(",");
    if (comma < 0 || versioned.slice(0, comma) !== "v1") continue;
    let given: Uint8Array;
    try {
      given = base64Bytes(versioned.slice(comma + 1));
    } catch {
      continue;
    }
    // Every pair is compared: no early exit on the first match either.
    for (const mac of expected) matched = constantTimeEqual(mac, given) || matched;
  }
  if (!matched) throw new WebhookVerificationError("no matching signature found");
  const text = new TextDecoder("utf-8", { fatal: true }).decode(payload);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new WebhookVerificationError("the payload is not JSON");
  }
}
