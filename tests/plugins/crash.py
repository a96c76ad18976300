#!/usr/bin/env python3
"""Crashes on every request after saying why on stderr."""
import sys

sys.stdin.readline()
print("connecting to the approvals API", file=sys.stderr)
print("fatal: upstream refused the connection", file=sys.stderr)
sys.exit(3)
