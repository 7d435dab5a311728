/**
 * src/types.ts against billhook's own `/openapi.json` (written by the repo's
 * .venv): every interface named after a component schema has exactly the
 * schema's properties, required where the schema requires them, and its
 * string-literal unions are the schema's enums.
 */

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { before, describe, test } from "node:test";
import ts from "typescript";

import { PACKAGE, python } from "./support.js";

interface Schema {
  properties?: Record<string, Schema>;
  required?: string[];
  enum?: unknown[];
  anyOf?: Schema[];
  $ref?: string;
}

// Each interface checked, and the component schema it stands for.
const CHECKED: Record<string, string> = {
  CheckAnswer: "CheckAnswer",
  CheckDenial: "CheckDenial",
  Entitlement: "Entitlement",
  Features: "Features",
  Seats: "Seats",
  Subscription: "Subscription",
  Override: "Override",
  EventCause: "EventCause",
  TimeCause: "TimeCause",
  ChangeFeatures: "ChangeFeatures",
  EntitlementChange: "EntitlementChange",
  EnforcementChange: "EnforcementChange",
  Changes: "Changes",
  ErrorAnswer: "Error",
};

const DOCUMENT = `
import json, sys, tempfile, pathlib
from billhook.api.openapi import openapi_document
from billhook.testing.settings import make_settings
json.dump(openapi_document(make_settings(pathlib.Path(tempfile.mkdtemp()))), sys.stdout)
`;

interface Property {
  optional: boolean;
  /** The string literals of its type (and `null`), when it is a union of literals. */
  literals: Set<unknown> | null;
}

/** The interfaces of src/types.ts: property name → whether it is optional. */
function interfaces(): Map<string, Map<string, Property>> {
  const path = join(PACKAGE, "src", "types.ts");
  const source = ts.createSourceFile(path, readFileSync(path, "utf-8"), ts.ScriptTarget.ES2022, true);
  const aliases = new Map<string, ts.TypeNode>();
  for (const statement of source.statements) {
    if (ts.isTypeAliasDeclaration(statement)) aliases.set(statement.name.text, statement.type);
  }
  const literalsOf = (node: ts.TypeNode): Set<unknown> | null => {
    if (ts.isTypeReferenceNode(node) && ts.isIdentifier(node.typeName)) {
      const alias = aliases.get(node.typeName.text);
      return alias === undefined ? null : literalsOf(alias);
    }
    const members = ts.isUnionTypeNode(node) ? node.types : [node];
    const values = new Set<unknown>();
    for (const member of members) {
      if (!ts.isLiteralTypeNode(member)) return null;
      if (ts.isStringLiteral(member.literal)) values.add(member.literal.text);
      else if (member.literal.kind === ts.SyntaxKind.NullKeyword) values.add(null);
      else return null;
    }
    return values.size > 0 && [...values].some((v) => v !== null) ? values : null;
  };
  const found = new Map<string, Map<string, Property>>();
  for (const statement of source.statements) {
    if (!ts.isInterfaceDeclaration(statement)) continue;
    const properties = new Map<string, Property>();
    for (const member of statement.members) {
      if (!ts.isPropertySignature(member) || member.type === undefined) continue;
      properties.set(member.name.getText(source), {
        optional: member.questionToken !== undefined,
        literals: literalsOf(member.type),
      });
    }
    found.set(statement.name.text, properties);
  }
  return found;
}

/** The enum a property's schema allows, when it has one (directly or in an anyOf). */
function enumOf(schema: Schema): Set<unknown> | null {
  if (schema.enum !== undefined) return new Set(schema.enum);
  return null;
}

describe("src/types.ts against /openapi.json", () => {
  let schemas: Record<string, Schema>;
  const declared = interfaces();

  before(() => {
    const document = JSON.parse(python(DOCUMENT)) as { components: { schemas: Record<string, Schema> } };
    schemas = document.components.schemas;
  });

  for (const [name, schemaName] of Object.entries(CHECKED)) {
    test(`${name} is ${schemaName}`, () => {
      const schema = schemas[schemaName];
      assert.ok(schema?.properties, `no component schema ${schemaName}`);
      const properties = declared.get(name);
      assert.ok(properties, `no interface ${name} in src/types.ts`);
      // Every property typed here is one billhook documents...
      assert.deepEqual([...properties.keys()].sort(), Object.keys(schema.properties).sort());
      // ...and each one billhook always sends is required here.
      for (const required of schema.required ?? []) {
        assert.equal(properties.get(required)?.optional, false, `${name}.${required} must be required`);
      }
      // A union of literals is exactly the schema's enum (decisions, modes, sources, kinds).
      for (const [property, { literals }] of properties) {
        const allowed = enumOf(schema.properties[property]!);
        if (literals !== null && allowed !== null) {
          assert.deepEqual([...literals].sort(), [...allowed].sort(), `${name}.${property}`);
        }
      }
    });
  }

  test("every interface the client decodes is checked", () => {
    const unchecked = [...declared.keys()].filter((name) => !(name in CHECKED));
    assert.deepEqual(unchecked, []);
  });
});
