#!/usr/bin/env python3
"""A well-behaved exec plugin for the tests: its actions and the decisions it received
live in a JSON state file (argv[1]), since every request is a new process."""
import json
import os
import sys

state_path = sys.argv[1]
request = json.loads(sys.stdin.readline())
with open(state_path) as f:
    state = json.load(f)


def answer(obj):
    print(json.dumps(obj))
    sys.exit(0)


def find(action_id):
    return next((a for a in state["actions"] if a["id"] == action_id), None)


assert request["v"] == 1, request
op = request["op"]
if op == "list":
    answer({"actions": [a for a in state["actions"] if a["status"] == "pending"]})
if op == "fetch":
    action = find(request["id"])
    if action is None:
        answer({"error": {"code": "not_found", "message": f"no action {request['id']}"}})
    answer({"action": action})
if op == "decide":
    d = request["decision"]
    action = find(d["id"])
    if action is None:
        answer({"error": {"code": "not_found", "message": f"no action {d['id']}"}})
    if any(x["idempotency_key"] == d["idempotency_key"] for x in state["decisions"]):
        answer({"result": "delivered", "action": action})  # a retry: already applied
    if action["status"] != "pending":
        answer({"result": "not_pending", "status": action["status"]})
    action["status"] = "approved" if d["verdict"] == "approve" else "denied"
    state["decisions"].append(d)
    tmp = state_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, state_path)
    answer({"result": "delivered", "action": action})
answer({"error": {"code": "unsupported", "message": f"unknown op {op}"}})
