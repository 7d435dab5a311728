/**
 * What makes the package run on Node, Deno, Bun and Cloudflare Workers alike:
 * no runtime dependency, nothing imported but its own modules (fetch, Web
 * Crypto and Request/Response are the runtime's), and its entry point builds.
 */

import assert from "node:assert/strict";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

import { PACKAGE } from "./support.js";

const manifest = JSON.parse(readFileSync(join(PACKAGE, "package.json"), "utf-8")) as Record<string, unknown>;

test("no runtime dependency; only build and test tools, pinned", () => {
  for (const field of ["dependencies", "peerDependencies", "optionalDependencies", "bundleDependencies"]) {
    assert.equal(manifest[field], undefined, field);
  }
  const dev = manifest.devDependencies as Record<string, string>;
  assert.deepEqual(Object.keys(dev).sort(), ["@types/node", "typescript"]);
  for (const version of Object.values(dev)) assert.match(version, /^\d+\.\d+\.\d+$/);
  assert.equal(manifest.type, "module");
});

test("the sources import only each other", () => {
  const src = join(PACKAGE, "src");
  for (const file of readdirSync(src)) {
    const text = readFileSync(join(src, file), "utf-8");
    for (const [, specifier] of text.matchAll(/(?:import|export)[^;]*?from\s+"([^"]+)"/g)) {
      assert.match(specifier!, /^\.\/[a-z]+\.js$/, `${file} imports ${specifier}`);
    }
    const node = /\bprocess\.|\bBuffer\b|\brequire\(\s*["']|\bglobalThis\.process\b/.exec(text);
    assert.equal(node?.[0], undefined, `${file} uses a Node global`);
  }
});

test("the package's entry point is what it exports", async () => {
  const entry = (await import("billhook-client")) as Record<string, unknown>;
  for (const name of ["Billhook", "verifyWebhook", "denialResponse", "BillingRequired", "BillhookUnavailable"]) {
    assert.equal(typeof entry[name], "function", name);
  }
  assert.deepEqual(entry.POLICIES, ["closed", "open", "last_known"]);
});
