// Drives the official `auth0` 7.1.0 Node SDK against a running userexport server.
//
// Run by tests/e2e/auth0.rs with NODE_PATH pointing at the installed node_modules,
// USEREXPORT_SDK_BASE_URL (http://host:port) and USEREXPORT_SDK_FIXTURE (a JSON file: client_id,
// client_secret, other_job, users = the Auth0 view of every exported user in order).
// `ManagementClient` hard-codes https://{domain}, so fetch is wrapped to speak http; it then gets
// its token from /oauth/token with client credentials. Creates a CSV and a JSON export, polls them
// to completion, downloads and gunzips `location`, checks every row, then checks the SDK's typed
// errors. Exits non-zero on the first mismatch.

import { createRequire } from "node:module";
import { readFileSync } from "node:fs";
import { gunzipSync } from "node:zlib";
import path from "node:path";

// NODE_PATH does not apply to ES module imports: resolve the SDK from it explicitly.
const require = createRequire(path.join(process.env.NODE_PATH ?? process.cwd(), "noop.js"));
const { ManagementClient, ManagementError } = require("auth0");

const BASE = process.env.USEREXPORT_SDK_BASE_URL.replace(/\/$/, "");
const FIXTURE = JSON.parse(readFileSync(process.env.USEREXPORT_SDK_FIXTURE, "utf8"));
const USERS = FIXTURE.users;

function check(cond, msg) {
  if (!cond) {
    console.error(`FAIL: ${msg}`);
    process.exit(1);
  }
}

const realFetch = globalThis.fetch;
const httpFetch = (url, init) => realFetch(String(url instanceof Request ? url.url : url).replace(/^https:/, "http:"), init);
globalThis.fetch = httpFetch;

/** Evaluates an Auth0 dotted/indexed path on a user. */
function resolve(user, p) {
  let cur = user;
  for (const part of p.replace(/\]/g, "").replace(/\[/g, ".").split(".")) {
    if (cur === null || cur === undefined) return undefined;
    if (Array.isArray(cur)) cur = /^\d+$/.test(part) ? cur[Number(part)] : undefined;
    else if (typeof cur === "object") cur = cur[part];
    else return undefined;
  }
  return cur;
}

function csvCell(v) {
  if (v === null || v === undefined) return "";
  if (typeof v === "boolean" || typeof v === "number") return String(v);
  if (typeof v === "string") {
    const formula = /^[=\-@\t\r]/.test(v) || (v.startsWith("+") && !/^\+\d+$/.test(v));
    return formula ? `'${v}` : v;
  }
  return JSON.stringify(v);
}

/** RFC 4180 reader (quoted fields, doubled quotes, newlines inside quotes). */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = "";
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        i++;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ",") {
      row.push(field);
      field = "";
    } else if (c === "\n") {
      row.push(field);
      rows.push(row);
      row = [];
      field = "";
    } else if (c !== "\r") field += c;
  }
  if (field !== "" || row.length) {
    row.push(field);
    rows.push(row);
  }
  return rows;
}

/** JSON with object keys sorted, to compare documents regardless of key order. */
function canonical(v) {
  if (Array.isArray(v)) return `[${v.map(canonical).join(",")}]`;
  if (v && typeof v === "object") {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${canonical(v[k])}`).join(",")}}`;
  }
  return JSON.stringify(v);
}

async function wait(client, id) {
  const deadline = Date.now() + 120_000;
  for (;;) {
    const job = await client.jobs.get(id);
    check(job.id === id && job.type === "users_export", `job ${JSON.stringify(job)}`);
    if (job.status !== "pending" && job.status !== "processing") return job;
    if (job.status === "processing") check(Number.isInteger(job.percentage_done), `progress ${JSON.stringify(job)}`);
    check(Date.now() < deadline, `timed out waiting for ${id}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

async function download(url) {
  const resp = await realFetch(url);
  check(resp.status === 200, `download status ${resp.status}`);
  return gunzipSync(Buffer.from(await resp.arrayBuffer())).toString("utf8");
}

async function expectError(promise, status, errorCode, what) {
  try {
    await promise;
  } catch (e) {
    check(e instanceof ManagementError, `${what}: ${e}`);
    check(e.statusCode === status, `${what}: status ${e.statusCode}`);
    check(e.body?.errorCode === errorCode, `${what}: body ${JSON.stringify(e.body)}`);
    return;
  }
  check(false, `${what}: expected an error`);
}

const domain = new URL(BASE).host;
const client = new ManagementClient({
  domain,
  clientId: FIXTURE.client_id,
  clientSecret: FIXTURE.client_secret,
  fetch: httpFetch,
  maxRetries: 0,
});

const fields = [
  { name: "user_id", export_as: "Id" },
  { name: "email" },
  { name: "user_metadata.plan", export_as: "plan" },
  { name: "identities[0].connection", export_as: "Connection" },
  { name: "email_verified" },
  { name: "logins_count" },
];
const created = await client.jobs.usersExports.create({ format: "csv", fields });
check(created.status === "pending" && /^job_[A-Za-z0-9]{16}$/.test(created.id), `created ${JSON.stringify(created)}`);
let job = await wait(client, created.id);
check(job.status === "completed" && job.format === "csv", `csv job ${JSON.stringify(job)}`);
const rows = parseCsv(await download(job.location));
check(
  JSON.stringify(rows[0]) === JSON.stringify(["Id", "email", "plan", "Connection", "email_verified", "logins_count"]),
  `header ${rows[0]}`,
);
check(rows.length - 1 === USERS.length, `${rows.length - 1} rows for ${USERS.length} users`);
USERS.forEach((user, i) => {
  const want = fields.map((f) => csvCell(resolve(user, f.name)));
  check(JSON.stringify(rows[i + 1]) === JSON.stringify(want), `row ${rows[i + 1]} != ${want}`);
});
check((await client.jobs.errors.get(created.id)) === undefined, "a completed job has no errors (204)");

const jsonJob = await client.jobs.usersExports.create({ format: "json", limit: USERS.length });
job = await wait(client, jsonJob.id);
check(job.status === "completed" && job.format === "json", `json job ${JSON.stringify(job)}`);
const lines = (await download(job.location)).split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
check(canonical(lines) === canonical(USERS), "every NDJSON line is the Auth0 view of the user, in order");

await expectError(client.jobs.usersExports.create({ format: "xml" }), 400, "invalid_body", "unknown format");
await expectError(
  client.jobs.usersExports.create({ fields: [{ name: "email", export_as: "x".repeat(101) }] }),
  400,
  "invalid_body",
  "long export_as",
);
await expectError(client.jobs.get(FIXTURE.other_job), 404, "inexistent_job", "another project's job");
const badToken = new ManagementClient({ domain, token: "not-a-token", fetch: httpFetch, maxRetries: 0 });
await expectError(badToken.jobs.get(created.id), 401, "invalid_token", "bad token");
console.log(`auth0 node: csv and json exports of ${USERS.length} users verified`);
