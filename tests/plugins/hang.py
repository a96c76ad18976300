#!/usr/bin/env python3
"""Never answers: starts a child that keeps stdout open (so only killing the whole
process group ends the call), writes the child's pid to argv[1], and sleeps."""
import subprocess
import sys
import time

child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
time.sleep(600)
