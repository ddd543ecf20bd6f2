"""Runtime settings read from the environment (Lambda configuration, local mode or the CLI)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace

from sluice.errors import SluiceError


@dataclass(frozen=True)
class Settings:
    """Names of the resources the runtime talks to.

    Each field maps to the environment variable ``SLUICE_<FIELD>`` (upper case).
    """

    registry_table: str = ""
    registry_bucket: str = ""
    # The registry's audit store (S3 Object Lock, compliance mode) and its two SIGN_VERIFY keys
    # (id, ARN or alias); empty means the names derived from the table and bucket (sluice.names).
    audit_bucket: str = ""
    manifest_key: str = ""
    approval_key: str = ""
    capture_bucket: str = ""
    work_bucket: str = ""
    notify_topic_arn: str = ""
    retrain_state_machine_arn: str = ""
    # The retraining trigger's single-flight lock table (one item per model).
    retrain_lock_table: str = ""
    capture_stream: str = ""
    reports_bucket: str = ""
    # Batch scoring: the endpoint the endpoint-calling variant posts to, and the pipeline `sluice batch run` starts.
    batch_endpoint_url: str = ""
    batch_state_machine_arn: str = ""
    # The model version an endpoint's Lambda version serves (set by `sluice endpoint deploy`).
    model_name: str = ""
    model_version: str = ""
    model_flavour: str = ""
    # {artifact: sha256} of what that version serves, bound at deploy (see sluice.registry.manifest).
    model_artifacts: str = ""
    # {"approved_by", "signature"}: the version's approval, checked over model_artifacts at cold start.
    model_approval: str = ""
    # Comma-separated models whose labels the stage takes (the labels function refuses others).
    label_models: str = ""
    # JSON {model: {"url", "function", "batch", "retrain"}} of every model the stage serves (the
    # stage output ``Models``); the single-model fields above are the default model's.
    stage_models: str = ""
    region: str = ""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        values = {f.name: env.get(f"SLUICE_{f.name.upper()}", "") for f in fields(cls)}
        values["region"] = values["region"] or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION", "")
        return cls(**values)

    def for_model(self, model: str) -> Settings:
        """These settings with the named model's pipelines and endpoint, when the stage lists it.

        A stage serving several models names the default model's in the single-model fields
        (``SLUICE_BATCH_STATE_MACHINE_ARN``, ...); every model's are in ``SLUICE_STAGE_MODELS``.
        """
        try:
            found = json.loads(self.stage_models).get(model) if self.stage_models else None
        except (ValueError, AttributeError):
            raise SluiceError("SLUICE_STAGE_MODELS must be the stage's JSON 'Models' output") from None
        if not isinstance(found, dict):
            return self
        url = str(found.get("url") or "").rstrip("/")
        return replace(
            self,
            batch_state_machine_arn=str(found.get("batch") or self.batch_state_machine_arn),
            retrain_state_machine_arn=str(found.get("retrain") or self.retrain_state_machine_arn),
            batch_endpoint_url=url + "/predict" if url else self.batch_endpoint_url,
        )

    def endpoint_function(self, model: str) -> str:
        """The named model's endpoint function, when the stage lists it; else ``""``."""
        try:
            found = json.loads(self.stage_models).get(model) if self.stage_models else None
        except (ValueError, AttributeError):
            return ""
        return str(found.get("function") or "") if isinstance(found, dict) else ""

    def require(self, *names: str) -> Settings:
        """Raise a clear error if any of the named settings is empty."""
        missing = [f"SLUICE_{n.upper()}" for n in names if not getattr(self, n)]
        if missing:
            raise SluiceError(
                f"missing setting(s): {', '.join(missing)} (name the stage: `sluice --stage dev ...` or "
                "SLUICE_STAGE=dev, which finds them; or set the environment variables)"
            )
        return self
