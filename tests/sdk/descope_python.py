"""Drives the official Descope Python SDK (descope 2.16.0) against a running userexport server.

Run by tests/e2e/descope.rs as `descope_python.py <scenario>` with USEREXPORT_SDK_BASE_URL
(http://host:port) and USEREXPORT_SDK_FIXTURE (a JSON file: project_id, management_key, and what the
scenario expects). Exits non-zero on the first mismatch.

- `basic`: pages through every user with `search_all` (no duplicate, none missing), searches with
  filters and for test users, loads by login id and user id, creates and batch-creates users,
  changes status and roles, and checks that errors surface as the SDK's exceptions with Descope's
  error codes.
- `export`: creates a filtered CSV export through the native API, waits for it, downloads it, and
  compares it user for user with `search_all` under the same filters.
"""

import csv
import io
import json
import os
import sys
import time
import urllib.request

from descope import AssociatedTenant, AuthException, DescopeClient, UserObj
from descope.management.common import Sort

BASE = os.environ["USEREXPORT_SDK_BASE_URL"].rstrip("/")
with open(os.environ["USEREXPORT_SDK_FIXTURE"], encoding="utf-8") as f:
    FIXTURE = json.load(f)
PROJECT = FIXTURE["project_id"]
KEY = FIXTURE["management_key"]


def check(cond, msg):
    if not cond:
        print(f"FAIL: {msg}", file=sys.stderr)
        sys.exit(1)


def client(key=KEY):
    return DescopeClient(PROJECT, management_key=key, base_url=BASE)


def page_all(mgmt, limit, **filters):
    """Every user `search_all` returns for `filters`, page by page; checks `total` on each page."""
    ids, total, page = [], None, 0
    while True:
        res = mgmt.user.search_all(limit=limit, page=page, **filters)
        if total is None:
            total = res["total"]
        check(res["total"] == total, f"total changed from {total} to {res['total']} on page {page}")
        users = res["users"]
        check(len(users) <= limit, f"page {page} holds {len(users)} users, limit {limit}")
        if not users:
            return ids, total
        ids.extend(u["userId"] for u in users)
        page += 1


def expect_error(fn, status, code):
    try:
        fn()
    except AuthException as e:
        check(e.status_code == status, f"status {e.status_code}, want {status}: {e.error_message}")
        body = json.loads(e.error_message)
        check(body["errorCode"] == code, f"errorCode {body['errorCode']}, want {code}")
        check("errorDescription" in body, f"no errorDescription in {body}")
        return
    check(False, f"expected AuthException {status} {code}")


def basic():
    c = client()
    mgmt = c.mgmt

    # Paging through all 20k users: every user once, in insertion order.
    started = time.monotonic()
    ids, total = page_all(mgmt, 100, with_test_user=True)
    elapsed = time.monotonic() - started
    want = FIXTURE["all_ids"]
    check(total == len(want), f"total {total}, want {len(want)}")
    check(len(ids) == len(set(ids)), "a user appeared twice while paging")
    check(ids == want, f"paging returned {len(ids)} users, want {len(want)} in insertion order")
    print(f"paged {len(ids)} users in {len(ids) // 100 + 1} calls, {elapsed:.1f} s")

    # Defaults: real users only, 100 per page.
    res = mgmt.user.search_all()
    check(res["total"] == len(FIXTURE["real_ids"]), "default search counts real users only")
    check([u["userId"] for u in res["users"]] == FIXTURE["real_ids"][:100], "default page")

    # Filters (statuses, tenants, custom attributes) with a sort-free insertion order.
    ids, total = page_all(
        mgmt,
        250,
        statuses=["enabled", "invited"],
        tenant_ids=["T-initech"],
        custom_attributes={"plan": ["pro", "team"]},
    )
    check(ids == FIXTURE["filtered_ids"], f"filtered search: {len(ids)} users, want {len(FIXTURE['filtered_ids'])}")
    check(total == len(ids), "filtered total")

    # Test users through the /search/test path.
    res = mgmt.user.search_all_test_users(limit=1000)
    check([u["userId"] for u in res["users"]] == FIXTURE["test_ids"], "test users")

    # Sorting by email, descending.
    res = mgmt.user.search_all(limit=50, sort=[Sort(field="email", desc=True)])
    emails = [u["email"] for u in res["users"]]
    check(emails == sorted(emails, reverse=True), "sorted by email descending")

    # Load by login id and by user id.
    sample = FIXTURE["sample"]
    check(mgmt.user.load(sample["loginIds"][0]) == {"user": sample}, "load by login id")
    check(mgmt.user.load_by_user_id(sample["userId"]) == {"user": sample}, "load by user id")
    expect_error(lambda: mgmt.user.load("nobody@example.com"), 404, "E112102")
    pair = {sample["userId"], FIXTURE["all_ids"][1]}
    res = mgmt.user.load_users(list(pair))
    want = [i for i in FIXTURE["all_ids"] if i in pair]
    check([u["userId"] for u in res["users"]] == want, "load_users")

    # Create, then find it by search and load.
    created = mgmt.user.create(
        login_id="sdk-user@example.com",
        email="sdk-user@example.com",
        phone="+15550001111",
        display_name="SDK User",
        role_names=["viewer"],
        custom_attributes={"plan": "pro"},
        verified_email=True,
    )["user"]
    check(created["loginIds"] == ["sdk-user@example.com"], f"created {created}")
    check(created["name"] == "SDK User" and created["verifiedEmail"] is True, f"created {created}")
    check(mgmt.user.load("sdk-user@example.com")["user"]["userId"] == created["userId"], "load the created user")
    res = mgmt.user.search_all(emails=["sdk-user@example.com"])
    check([u["userId"] for u in res["users"]] == [created["userId"]], "search finds the created user")
    expect_error(lambda: mgmt.user.create(login_id="sdk-user@example.com"), 409, "E011409")

    # Batch create: all or nothing.
    res = mgmt.user.invite_batch(
        [
            UserObj(login_id="batch-1@example.com", email="batch-1@example.com", display_name="One"),
            UserObj(login_id="batch-2", user_tenants=[AssociatedTenant("T-batch", ["member"])]),
        ]
    )
    check(len(res["createdUsers"]) == 2 and res["failedUsers"] == [], f"batch {res}")
    check(res["createdUsers"][0]["status"] == "invited", "invite_batch invites")
    expect_error(
        lambda: mgmt.user.invite_batch([UserObj(login_id="batch-3"), UserObj(login_id="batch-1@example.com")]),
        409,
        "E011409",
    )
    expect_error(lambda: mgmt.user.load("batch-3"), 404, "E112102")
    res = mgmt.user.search_all(tenant_ids=["T-batch"])
    check([u["loginIds"] for u in res["users"]] == [["batch-2"]], "batch user in its tenant")

    # Status and roles.
    check(mgmt.user.deactivate("batch-2")["user"]["status"] == "disabled", "deactivate")
    check(mgmt.user.activate("batch-2")["user"]["status"] == "enabled", "activate")
    check(mgmt.user.set_roles("sdk-user@example.com", ["a", "b"])["user"]["roleNames"] == ["a", "b"], "set_roles")
    check(mgmt.user.add_roles("sdk-user@example.com", ["c"])["user"]["roleNames"] == ["a", "b", "c"], "add_roles")
    check(mgmt.user.remove_roles("sdk-user@example.com", ["a"])["user"]["roleNames"] == ["b", "c"], "remove_roles")

    # A wrong management key is a 401 in Descope's envelope.
    expect_error(lambda: client("wrong-key").mgmt.user.search_all(), 401, "E011401")
    print("basic: ok")


def http(method, path, body=None):
    req = urllib.request.Request(
        f"{BASE}{path}",
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {PROJECT}:{KEY}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=60) as resp:
        return resp.status, resp.read()


def export():
    filters = {"statuses": ["enabled"], "tenant_ids": ["T-acme", "T-umbrella"], "custom_attributes": {"plan": ["pro"]}}
    status, body = http(
        "POST",
        "/v1/exports",
        {"format": "csv", "view": "descope", "fields": [{"pointer": "/userId"}], "filters": filters},
    )
    check(status == 202, f"create export: {status} {body[:200]}")
    task = json.loads(body)
    started = time.monotonic()
    while task["status"] in ("pending", "processing"):
        check(time.monotonic() - started < 300, f"export still {task['status']} after 300 s")
        time.sleep(0.2)
        _, body = http("GET", f"/v1/exports/{task['id']}")
        task = json.loads(body)
    check(task["status"] == "completed", f"export ended {task}")
    print(f"export of {task['rows_written']} users took {time.monotonic() - started:.1f} s")
    with urllib.request.urlopen(task["download_url"], timeout=120) as resp:
        rows = list(csv.reader(io.StringIO(resp.read().decode("utf-8"))))
    check(rows[0] == ["userId"], f"header {rows[0]}")
    exported = [r[0] for r in rows[1:]]

    started = time.monotonic()
    ids, total = page_all(
        client().mgmt,
        1000,
        statuses=["enabled"],
        tenant_ids=["T-acme", "T-umbrella"],
        custom_attributes={"plan": ["pro"]},
    )
    print(f"search_all paged {len(ids)} users in {time.monotonic() - started:.1f} s")
    check(len(exported) > 1000, f"the filter should select thousands of users, got {len(exported)}")
    check(total == len(exported), f"search total {total}, export rows {len(exported)}")
    check(ids == exported, "search_all and the export disagree")
    print("export: ok")


{"basic": basic, "export": export}[sys.argv[1]]()
