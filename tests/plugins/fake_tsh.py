#!/usr/bin/env python3
"""A stand-in for Teleport's `tsh` in the example plugin's test. Copied next to its
state: `requests.json` (what `tsh request ls --format=json` prints, in Teleport's
AccessRequest JSON) and `calls.jsonl` (every invocation's argv, one JSON list a line).
`tsh request review` adds a review and resolves the request like a one-approval
threshold would."""
import datetime
import json
import os
import sys

here = os.path.dirname(os.path.realpath(__file__))
requests_path = os.path.join(here, "requests.json")
args = sys.argv[1:]
with open(os.path.join(here, "calls.jsonl"), "a") as f:
    f.write(json.dumps(args) + "\n")
with open(requests_path) as f:
    requests = json.load(f)

if args[:2] == ["request", "ls"] and "--format=json" in args:
    print(json.dumps(requests, indent=4))
    sys.exit(0)
if args[:2] == ["request", "review"]:
    rest = args[2:]
    approve = "--approve" in rest
    deny = "--deny" in rest
    reason = rest[rest.index("--reason") + 1] if "--reason" in rest else ""
    request_id = rest[-1]
    match = [r for r in requests if r["metadata"]["name"] == request_id]
    if approve == deny or not match:
        print(f"ERROR: bad review of {request_id}", file=sys.stderr)
        sys.exit(1)
    req = match[0]
    if req["spec"]["state"] != 1:
        print("ERROR: request is not pending", file=sys.stderr)
        sys.exit(1)
    now = datetime.datetime.now(datetime.timezone.utc).isoformat().replace("+00:00", "Z")
    req["spec"].setdefault("reviews", []).append({
        "author": "ana",
        "roles": ["reviewer"],
        "proposed_state": 2 if approve else 3,
        "reason": reason,
        "created": now,
    })
    req["spec"]["state"] = 2 if approve else 3
    req["spec"]["resolve_reason"] = reason
    with open(requests_path, "w") as f:
        json.dump(requests, f)
    print(f"Successfully submitted review.  Request state: {'APPROVED' if approve else 'DENIED'}")
    sys.exit(0)
print(f"ERROR: fake tsh does not know {args}", file=sys.stderr)
sys.exit(2)
