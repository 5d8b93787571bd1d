// Validates Kubernetes objects against the Kubernetes OpenAPI schemas shipped in the npm package kubernetes-models
// (offline: the schemas are compiled into the package). Input on stdin: a stream of JSON objects, as
// `kubectl annotate --local -f - -o json` prints them. Output: one line per object ("ok KIND/NAME" or
// "FAIL KIND/NAME: reason"), then "N objects, M invalid"; exit code 0 only when every object is valid.
// The schemas check types, required fields and enums; like the API server's schema, they allow unknown fields.
import { readFileSync } from "node:fs";

const text = readFileSync(0, "utf8");
const objects = [];
let depth = 0, start = -1, inString = false, escape = false;
for (let i = 0; i < text.length; i++) {
  const c = text[i];
  if (inString) {
    if (escape) escape = false;
    else if (c === "\\") escape = true;
    else if (c === '"') inString = false;
    continue;
  }
  if (c === '"') inString = true;
  else if (c === "{") { if (depth++ === 0) start = i; }
  else if (c === "}") { if (--depth === 0) objects.push(JSON.parse(text.slice(start, i + 1))); }
}

let invalid = 0;
for (const o of objects) {
  const id = `${o.kind}/${o.metadata?.name}`;
  const [group, version] = String(o.apiVersion).includes("/") ? o.apiVersion.split("/") : ["", o.apiVersion];
  const module = group === "" ? `kubernetes-models/${version}/${o.kind}` : `kubernetes-models/${group}/${version}/${o.kind}`;
  let model;
  try {
    model = (await import(module))[o.kind];
  } catch {
    console.log(`FAIL ${id}: no schema for apiVersion ${o.apiVersion} kind ${o.kind}`);
    invalid++;
    continue;
  }
  try {
    new model(o).validate();
    console.log(`ok ${id}`);
  } catch (e) {
    console.log(`FAIL ${id}: ${e.message}`);
    invalid++;
  }
}
console.log(`${objects.length} objects, ${invalid} invalid`);
process.exit(invalid === 0 && objects.length > 0 ? 0 : 1);
