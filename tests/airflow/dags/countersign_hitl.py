"""Human-in-the-loop DAG for tests/backend_airflow.rs.

One run asks three people-questions at once, so a single run yields three HITL steps:
- `approve_release` (ApprovalOperator): "Approve" lets `release` run, "Reject" skips it;
- `choose_region` (HITLBranchOperator): pick one or more of "Deploy EU", "Deploy US",
  "Skip", with typed params `replicas` (integer) and `note` (string); the branch task of
  each chosen option runs and the others are skipped;
- `sign_off` (ApprovalOperator) assigned to another user only (`release-manager`), so
  Airflow refuses anyone else's answer with 403.
"""

from __future__ import annotations

import datetime

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.providers.standard.operators.hitl import ApprovalOperator, HITLBranchOperator
from airflow.sdk import DAG, Param

with DAG(
    dag_id="countersign_hitl",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc),
    catchup=False,
    default_args={"owner": "release-team"},
    tags=["countersign-test"],
) as dag:
    approve = ApprovalOperator(
        task_id="approve_release",
        subject="Release {{ dag_run.run_id }} to production?",
        body="Ships **v2.4.0** to `prod`.\n\n- migrations: 2\n- [changelog](https://example.invalid/changelog)",
        execution_timeout=datetime.timedelta(hours=2),
    )
    release = EmptyOperator(task_id="release")
    approve >> release

    ApprovalOperator(
        task_id="sign_off",
        subject="Sign off the release notes",
        assigned_users=[{"id": "release-manager", "name": "Rae"}],
    )

    choose = HITLBranchOperator(
        task_id="choose_region",
        subject="Where should v2.4.0 go?",
        body="Pick the regions to deploy to.",
        options=["Deploy EU", "Deploy US", "Skip"],
        options_mapping={"Deploy EU": "deploy_eu", "Deploy US": "deploy_us", "Skip": "skip_deploy"},
        defaults=["Skip"],
        multiple=True,
        params={
            "replicas": Param(2, type="integer", minimum=1, maximum=20, title="Replicas",
                              description="Pods per region"),
            "note": Param("", type="string", title="Note", description="Shown in the deploy log"),
        },
    )

    for branch in ("deploy_eu", "deploy_us", "skip_deploy"):
        choose >> EmptyOperator(task_id=branch)
