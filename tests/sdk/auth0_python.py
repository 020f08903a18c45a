"""Drives the official auth0-python 6.8.0 SDK against a running userexport server.

Run by tests/e2e/auth0.rs with USEREXPORT_SDK_BASE_URL (http://host:port) and
USEREXPORT_SDK_FIXTURE (a JSON file: client_id, client_secret, other_job, users = the Auth0 view of
every exported user in order). Authenticates with client credentials through /oauth/token, creates
a CSV and a JSON export, polls them to completion, downloads and gunzips `location` and checks every
row; then checks that wrong requests raise the SDK's typed errors with Auth0's error codes.
Exits non-zero on the first mismatch.
"""

import csv
import gzip
import io
import json
import os
import sys
import time
import urllib.parse
import urllib.request

from auth0.authentication import GetToken
from auth0.management import Auth0
from auth0.management.errors import BadRequestError, NotFoundError, UnauthorizedError

BASE = os.environ["USEREXPORT_SDK_BASE_URL"].rstrip("/")
with open(os.environ["USEREXPORT_SDK_FIXTURE"], encoding="utf-8") as f:
    FIXTURE = json.load(f)
USERS = FIXTURE["users"]


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


def resolve(user, path):
    """Evaluates an Auth0 dotted/indexed path (`identities[0].connection`) on a user."""
    cur = user
    for part in path.replace("]", "").replace("[", ".").split("."):
        if isinstance(cur, dict):
            cur = cur.get(part)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return None
        if cur is None:
            return None
    return cur


def csv_cell(v):
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    if isinstance(v, str):
        formula = v[:1] in ("=", "-", "@", "\t", "\r") or (v[:1] == "+" and not v[1:].isdigit())
        return "'" + v if formula else v
    return json.dumps(v, separators=(",", ":"), ensure_ascii=False)


def wait(client, job_id):
    deadline = time.time() + 120
    while True:
        job = client.jobs.get(job_id)
        check(job.id == job_id and job.type == "users_export", f"job {job}")
        if job.status not in ("pending", "processing"):
            return job
        if job.status == "processing":
            check(isinstance(job.percentage_done, int), f"percentage_done is an integer: {job}")
        check(time.time() < deadline, f"timed out waiting for {job_id}")
        time.sleep(0.2)


def download(url):
    with urllib.request.urlopen(url, timeout=60) as resp:
        check(resp.status == 200, f"download status {resp.status}")
        return gzip.decompress(resp.read()).decode("utf-8")


def main():
    host = urllib.parse.urlparse(BASE).netloc
    token = GetToken(host, FIXTURE["client_id"], client_secret=FIXTURE["client_secret"], protocol="http")
    granted = token.client_credentials(f"https://{host}/api/v2/")
    check(granted.get("token_type") == "Bearer", f"token response {granted}")
    client = Auth0(base_url=f"{BASE}/api/v2", token=granted["access_token"])

    fields = [
        {"name": "user_id", "export_as": "Id"},
        {"name": "email"},
        {"name": "user_metadata.plan", "export_as": "plan"},
        {"name": "identities[0].connection", "export_as": "Connection"},
        {"name": "email_verified"},
        {"name": "logins_count"},
    ]
    created = client.jobs.users_exports.create(format="csv", fields=fields)
    check(created.status == "pending" and created.type == "users_export", f"created {created}")
    check(created.id.startswith("job_") and len(created.id) == 20, f"job id {created.id}")
    job = wait(client, created.id)
    check(job.status == "completed", f"csv job {job}")
    check(job.format == "csv", f"format {job.format}")
    text = download(job.location)
    rows = list(csv.reader(io.StringIO(text)))
    check(rows[0] == ["Id", "email", "plan", "Connection", "email_verified", "logins_count"], f"header {rows[0]}")
    check(len(rows) - 1 == len(USERS), f"{len(rows) - 1} rows for {len(USERS)} users")
    for row, user in zip(rows[1:], USERS):
        want = [csv_cell(resolve(user, f["name"])) for f in fields]
        check(row == want, f"row {row} != {want}")
    check(client.jobs.errors.get(created.id) is None, "a completed job has no errors (204)")

    created = client.jobs.users_exports.create(format="json", limit=len(USERS))
    job = wait(client, created.id)
    check(job.status == "completed" and job.format == "json", f"json job {job}")
    lines = [json.loads(line) for line in download(job.location).splitlines()]
    check(lines == USERS, "every NDJSON line is the Auth0 view of the user, in order")

    try:
        client.jobs.users_exports.create(format="xml")
        check(False, "an unknown format is refused")
    except BadRequestError as e:
        check(e.status_code == 400 and e.body["errorCode"] == "invalid_body", f"{e.status_code} {e.body}")
    try:
        client.jobs.users_exports.create(fields=[{"name": "email", "export_as": "x" * 101}])
        check(False, "a long export_as is refused")
    except BadRequestError as e:
        check(e.body["errorCode"] == "invalid_body", f"{e.body}")
    try:
        client.jobs.get(FIXTURE["other_job"])
        check(False, "another project's job is not visible")
    except NotFoundError as e:
        check(e.status_code == 404 and e.body["errorCode"] == "inexistent_job", f"{e.body}")
    try:
        Auth0(base_url=f"{BASE}/api/v2", token="not-a-token").jobs.get(created.id)
        check(False, "a bad token is refused")
    except UnauthorizedError as e:
        check(e.status_code == 401 and e.body["statusCode"] == 401, f"{e.body}")
    print(f"auth0-python: csv and json exports of {len(USERS)} users verified")


if __name__ == "__main__":
    main()
