"""Credentials the embedded local AWS issues, all of them keys that moto's IAM and STS hold.

* :func:`issue_developer` creates the developer IAM user (:data:`DEVELOPER`) with an access
  key, when a stage starts. ``LocalAws`` records it in the state file under
  ``state["credentials"]`` (``aws_access_key_id``, ``aws_secret_access_key``, ``user_arn``)
  and uses it as the process's credentials while the stage runs, so whatever signs with the
  default credentials (boto3, :func:`localaws.auth.sign`) signs as that user. Each ``up``
  issues a new key.
* :func:`function_environment` gives a Lambda worker the credentials Lambda gives a function:
  a session of its execution role (``sts:AssumeRole``, session name = function name), as
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_SESSION_TOKEN``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from localaws.env import LocalAws

DEVELOPER = "sluice-local-developer"
#: What a worker's role session lasts (the longest STS allows); a worker is replaced sooner.
SESSION_SECONDS = 12 * 3600
_ADMIN = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})

log = logging.getLogger("localaws.credentials")


def issue_developer(local: LocalAws) -> dict[str, str]:
    """Create the developer user with an administrator inline policy and an access key.

    Returns
    -------
    dict
        ``aws_access_key_id``, ``aws_secret_access_key`` and ``user_arn``: what the state
        file records under ``credentials``.
    """
    iam = local.client("iam")
    user = iam.create_user(UserName=DEVELOPER, Tags=[{"Key": "sluice:local", "Value": "developer"}])["User"]
    iam.put_user_policy(UserName=DEVELOPER, PolicyName="administrator", PolicyDocument=_ADMIN)
    key = iam.create_access_key(UserName=DEVELOPER)["AccessKey"]
    return {
        "aws_access_key_id": key["AccessKeyId"],
        "aws_secret_access_key": key["SecretAccessKey"],
        "user_arn": user["Arn"],
    }


def function_environment(local: LocalAws, role_arn: str, function_name: str) -> dict[str, str]:
    """``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN`` of a role session.

    Without a role (or if STS refuses it) the worker gets the developer's key, so it still
    signs with a key moto knows.
    """
    if role_arn.startswith("arn:"):
        try:
            issued = local.client("sts").assume_role(
                RoleArn=role_arn, RoleSessionName=function_name[:64], DurationSeconds=SESSION_SECONDS
            )["Credentials"]
            return {
                "AWS_ACCESS_KEY_ID": issued["AccessKeyId"],
                "AWS_SECRET_ACCESS_KEY": issued["SecretAccessKey"],
                "AWS_SESSION_TOKEN": issued["SessionToken"],
            }
        except Exception:  # a worker must still start; it then signs as the developer
            log.warning("no session of %s for %s", role_arn, function_name, exc_info=True)
    developer: dict[str, Any] = getattr(local, "credentials", None) or {}
    return {
        "AWS_ACCESS_KEY_ID": developer.get("aws_access_key_id", "testing"),
        "AWS_SECRET_ACCESS_KEY": developer.get("aws_secret_access_key", "testing"),
    }
