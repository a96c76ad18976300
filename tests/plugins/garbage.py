#!/usr/bin/env python3
"""Answers with malformed output: `truncated` prints cut-off JSON, `types` prints valid
JSON with a number where an action's title should be."""
import sys

sys.stdin.readline()
if sys.argv[1] == "truncated":
    print('{"actions": [{"id": "g1", "title": ')
else:
    print('{"actions": [{"id": "g1", "kind": "command", "title": 42, "requester": "r",'
          ' "requested_at": "2026-11-25T00:00:00Z", "status": "pending"}]}')
