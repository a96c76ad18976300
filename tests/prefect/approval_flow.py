"""A flow that waits for a human answer, for tests/backend_prefect.rs.

Usage: approval_flow.py RUN_NAME OUT_FILE. Pauses with an ApprovalInput form, then
writes the answer it received to OUT_FILE as JSON and ends (COMPLETED).
"""

import json
import sys

from prefect import flow, pause_flow_run
from prefect.input import RunInput


class ApprovalInput(RunInput):
    approved: bool
    reason: str = ""


@flow(name="release-gate")
def release_gate(target: str = "prod") -> bool:
    answer = pause_flow_run(
        wait_for_input=ApprovalInput.with_initial_data(
            description=f"Ship **{target}**?\nAnswer with approved and a reason."
        ),
        timeout=600,
        poll_interval=1,
    )
    with open(sys.argv[2] + ".tmp", "w") as f:
        json.dump({"approved": answer.approved, "reason": answer.reason}, f)
    import os

    os.replace(sys.argv[2] + ".tmp", sys.argv[2])
    return answer.approved


if __name__ == "__main__":
    release_gate.with_options(flow_run_name=sys.argv[1])(target=sys.argv[1])
