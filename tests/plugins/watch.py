#!/usr/bin/env python3
"""An exec plugin with a `watch` stream, driven by files in a directory (argv[1]):

- `actions.json` (a JSON list of actions) is what `list` and `fetch` answer from;
- while a watch runs, every file that appears in `emit/` is printed as one watch line,
  verbatim, in name order, and deleted; so a test writes `{"type":"upsert",…}` or
  `not json` there and the plugin prints it, with nothing else going on;
- a file named `crash` in `emit/` makes the watch write to stderr and exit 3;
- each watch start appends a line to `watch-starts`, so a test can see restarts.

Files whose names start with `.` are skipped (tests write them first, then rename)."""
import json
import os
import sys
import time

root = sys.argv[1]
request = json.loads(sys.stdin.readline())
assert request["v"] == 1, request
op = request["op"]


def answer(obj):
    print(json.dumps(obj))
    sys.exit(0)


def actions():
    with open(os.path.join(root, "actions.json")) as f:
        return json.load(f)


if op == "list":
    answer({"actions": actions()})
if op == "fetch":
    found = next((a for a in actions() if a["id"] == request["id"]), None)
    if found is None:
        answer({"error": {"code": "not_found", "message": f"no action {request['id']}"}})
    answer({"action": found})
if op != "watch":
    answer({"error": {"code": "unsupported", "message": f"unknown op {op}"}})

with open(os.path.join(root, "watch-starts"), "a") as f:
    f.write(f"{os.getpid()}\n")
emit = os.path.join(root, "emit")
os.makedirs(emit, exist_ok=True)
print("watching", emit, file=sys.stderr, flush=True)
# Polling the directory is this plugin's business; Countersign just reads its stdout.
while True:
    for name in sorted(os.listdir(emit)):
        if name.startswith("."):
            continue
        path = os.path.join(emit, name)
        if name == "crash":
            os.remove(path)
            print("fatal: lost the upstream event feed", file=sys.stderr, flush=True)
            sys.exit(3)
        with open(path) as f:
            line = f.read().strip()
        os.remove(path)
        print(line, flush=True)
    time.sleep(0.05)
