"""Decisions through the stage's registry API: the only way AWS lets a person approve.

The registry API's function is the only principal the approval key lets sign, and the API's
resource policy lets only the approver role call approve and reject. So ``sluice models
approve`` sends a SigV4-signed ``POST .../approve`` as whoever runs it; a refusal comes back as
one line (the explicit deny of a principal that is not the approver, or the registry's own
refusal, such as approving one's own version).
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any

from sluice import aws
from sluice.errors import SluiceError

DECISIONS = ("approve", "reject")


def decide_via_api(
    api_url: str, name: str, version: int, decision: str, *, reason: str = ""
) -> dict[str, Any]:
    """``POST <api_url>/models/<name>/versions/<version>/<decision>``; the version record the API returns.

    Raises
    ------
    SluiceError
        With the API's answer, when it refuses (status 4xx or 5xx) or cannot be reached.
    """
    if decision not in DECISIONS:
        raise SluiceError(f"decision must be one of {', '.join(DECISIONS)}; got {decision!r}")
    url = f"{api_url.rstrip('/')}/models/{name}/versions/{int(version)}/{decision}"
    body = json.dumps({"comment": reason} if reason else {}).encode()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    request = aws.signed_request("POST", url, body=body, region=region)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as err:
        raise SluiceError(
            f"the registry API refused the {decision} ({err.code}): {_reason(err.read())}"
        ) from None
    except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
        raise SluiceError(f"the registry API at {api_url} is unreachable: {err}") from None


def _reason(raw: bytes) -> str:
    try:
        answer = json.loads(raw)
    except ValueError:
        return raw[:300].decode("utf-8", "replace")
    if isinstance(answer, dict):
        return str(answer.get("error") or answer.get("message") or answer.get("Message") or answer)[:300]
    return str(answer)[:300]
