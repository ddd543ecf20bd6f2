"""``LocalAws``: the synthesized dev stage running on an in-process moto server.

::

    with LocalAws.start(assembly_dir="cdk.out") as aws:
        aws.client("lambda").invoke(FunctionName=aws.physical_id("RegistryApiHandler"), ...)
        requests.get(aws.gateway_url("RegistryApi") + "/models")

``start`` starts moto's ``ThreadedMotoServer`` on 127.0.0.1 (ephemeral port), points
``AWS_ENDPOINT_URL`` at it for the block (restored on exit), emulates ``cdk bootstrap``,
publishes the assets, creates the stage's stacks from their synthesized templates with
moto's CloudFormation (fillers create what it skips, see :mod:`localaws.cloudformation`),
runs Lambda code in warm worker processes (:mod:`localaws.lambdas`) and serves each REST API
on a local HTTP gateway (:mod:`localaws.gateway`).

This module is the composition root: :data:`MOTO_PATCHES` lists the moto patches applied
before the server serves, and :data:`SERVICES` the services started once the stacks exist
(Step Functions execution, EventBridge delivery and schedules, alarms: :mod:`localaws.services`).

The account and region are the stage's own (``MOTO_ACCOUNT_ID`` is set for the block), so
ARNs and names in the templates resolve as in AWS.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from botocore.config import Config

from localaws import accounts, credentials, dynamodb, ecs, firehose, gateway, services
from localaws.assembly import StackArtifact, read_assembly
from localaws.bootstrap import bootstrap, publish_assets
from localaws.cloudformation import deploy, support
from localaws.cloudformation import models as cloudformation_models
from localaws.lambdas import runtime as lambdas
from localaws.persistence import LocalStore, journal_wanted
from localaws.persistence import install as install_journal
from sluice import aws as sluice_aws
from sluice.errors import NotFound, SluiceError

DEFAULT_STATE_DIR = ".sluice/local"
STATE_FILE = "state.json"
# Local Lambda invokes can run for minutes (training); never re-run one on a read timeout.
INVOKE_CONFIG = Config(read_timeout=900, connect_timeout=10, retries={"max_attempts": 0})


class Stoppable(Protocol):
    def stop(self) -> None: ...


#: moto patches, applied in this order before the server serves (each idempotent, each
#: naming the moto gap it fills; see :mod:`localaws.patches`). The Lambda invoke patch is
#: applied with the worker runtime, and the EventBridge and Step Functions ones by their services.
MOTO_PATCHES: tuple[Callable[[], None], ...] = (
    dynamodb.apply,  # isolated DynamoDB transactions under the threaded server
    cloudformation_models.install,  # the resource types moto's CloudFormation skips, its model fixes
    firehose.install,  # dynamic partitioning prefixes
    ecs.install,  # task definitions with their roles and Fargate settings
    accounts.install,  # assumed-role credentials act in their role's account
    install_journal,  # write-ahead journal and stable names (inert unless ``persist``)
)
#: Services started in this order once the stacks exist; each returns what ``stop`` stops
#: (in reverse order).
SERVICES: tuple[Callable[[LocalAws], Stoppable], ...] = (services.start_event_services, ecs.start)

_ENV_KEYS = (
    "AWS_ENDPOINT_URL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_PROFILE",
    "MOTO_ACCOUNT_ID",
    "MOTO_PORT",
)

log = logging.getLogger("localaws")


@dataclass
class Timings:
    """Seconds spent in each phase of ``start`` (printed by ``sluice local up``, read by bench)."""

    server: float = 0.0
    bootstrap: float = 0.0
    assets: float = 0.0
    stacks: float = 0.0
    runtime: float = 0.0

    @property
    def total(self) -> float:
        return self.server + self.bootstrap + self.assets + self.stacks + self.runtime


@dataclass
class LocalAws:
    """A running local stage. Create it with :meth:`start`; use it as a context manager."""

    assembly_dir: Path
    state_dir: Path
    stage: str
    account: str
    region: str
    stacks: list[StackArtifact]
    endpoint_url: str = ""
    deployed: list[deploy.DeployedStack] = field(default_factory=list)
    timings: Timings = field(default_factory=Timings)
    _server: Any = None
    _saved_env: dict[str, str | None] = field(default_factory=dict)
    _components: list[Stoppable] = field(default_factory=list)
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _clients_lock: threading.Lock = field(default_factory=threading.Lock)
    runtime: lambdas.LambdaRuntime | None = None
    gateways: gateway.Gateways | None = None
    persist: bool = False
    store: LocalStore | None = None
    #: The developer's key issued at start (:mod:`localaws.credentials`), also the process's while running.
    credentials: dict[str, str] = field(default_factory=dict)

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def start(
        cls,
        assembly_dir: str | Path = "cdk.out",
        state_dir: str | Path = DEFAULT_STATE_DIR,
        stage: str = "Dev",
        *,
        port: int = 0,
        gateway_port: int = 0,
        persist: bool = False,
    ) -> LocalAws:
        """Bring the stage up and return it (already started; ``with`` stops it).

        Parameters
        ----------
        assembly_dir
            A synthesized cloud assembly (``cdk synth -o``).
        state_dir
            Where the state file, extracted code and worker logs go.
        stage
            Stage display name in the assembly (``Dev``), case-insensitive.
        port, gateway_port
            0 picks free ports. ``gateway_port`` is used by the first REST API; others get
            the following ports (or free ones when 0).
        persist
            Journal every acknowledged write under ``state_dir/data`` and replay it on the
            next start, so a killed or stopped stage comes back as it was (objects, items,
            Lambda versions and aliases, alarm states, executions; :mod:`localaws.persistence`).
            A clean ``stop`` compacts the journal into a snapshot.

        Raises
        ------
        SluiceError
            If the assembly has no such stage or a template cannot be deployed locally.
        """
        stacks = [s for s in read_assembly(assembly_dir) if s.stage.lower() == stage.lower()]
        if not stacks:
            raise SluiceError(f"no stage {stage!r} in the cloud assembly at {assembly_dir}")
        environments = {(s.account, s.region) for s in stacks}
        if len(environments) != 1:
            raise SluiceError(
                f"stage {stage} spans several environments {sorted(environments)}; local AWS runs one"
            )
        account, region = environments.pop()
        local = cls(
            assembly_dir=Path(assembly_dir).resolve(),
            state_dir=Path(state_dir).resolve(),
            stage=stage,
            account=account,
            region=region,
            stacks=stacks,
        )
        try:
            local.persist = persist
            local._start(port=port, gateway_port=gateway_port)
        except BaseException:
            local.stop()
            raise
        return local

    def _start(self, *, port: int, gateway_port: int) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        self._set_environment()
        for apply in MOTO_PATCHES:
            apply()
        self.runtime = lambdas.install(self)
        self._start_server(port)
        self.credentials = credentials.issue_developer(self)
        os.environ["AWS_ACCESS_KEY_ID"] = self.credentials["aws_access_key_id"]
        os.environ["AWS_SECRET_ACCESS_KEY"] = self.credentials["aws_secret_access_key"]
        self._clients.clear()  # from here on every client signs as the developer
        sluice_aws.reset_clients()
        t1 = time.perf_counter()
        bootstrap(self.account, self.region)
        t2 = time.perf_counter()
        for stack in self.stacks:
            if stack.assets_path is not None:
                publish_assets(stack.assets_path, account=self.account, region=self.region)
        t3 = time.perf_counter()
        if journal_wanted(self.persist):
            self.store = LocalStore(self)
            self.store.pin_names()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.deployed = [deploy.deploy_stack(stack) for stack in self.stacks]
        if self.store is not None:
            self.store.recover()
        t4 = time.perf_counter()
        self.gateways = gateway.Gateways.serve(self, first_port=gateway_port)
        for start in SERVICES:
            self._components.append(start(self))
        t5 = time.perf_counter()
        self.timings = Timings(
            server=t1 - t0, bootstrap=t2 - t1, assets=t3 - t2, stacks=t4 - t3, runtime=t5 - t4
        )
        self.write_state()

    def _set_environment(self) -> None:
        """The stage's credentials, region and account for this process (restored by ``stop``)."""
        self._saved_env = {k: os.environ.get(k) for k in _ENV_KEYS}
        os.environ.pop("AWS_PROFILE", None)
        os.environ.pop("AWS_SESSION_TOKEN", None)
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
        os.environ["AWS_DEFAULT_REGION"] = os.environ["AWS_REGION"] = self.region
        os.environ["MOTO_ACCOUNT_ID"] = self.account
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        logging.getLogger("moto").setLevel(logging.ERROR)

    def _start_server(self, port: int) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        self._server.start()
        host, bound = self._server.get_host_and_port()
        self.endpoint_url = f"http://{host}:{bound}"
        os.environ["AWS_ENDPOINT_URL"] = self.endpoint_url
        os.environ["MOTO_PORT"] = str(bound)  # moto's Step Functions executor calls back here
        # moto's backends are process-wide: start from a clean slate, so a second stage brought
        # up in the same process (tests, `local up` after `down`) does not meet the first one's.
        urllib.request.urlopen(urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"))
        support.clear_emulated()
        sluice_aws.reset_clients()

    def stop(self) -> None:
        """Stop components, workers, gateways and the server; restore the environment."""
        for component in reversed(self._components):
            stopper = getattr(component, "stop", None)
            if callable(stopper):
                try:
                    stopper()
                except Exception:  # keep stopping the rest
                    log.exception("stopping %r failed", component)
        self._components = []
        if self.gateways is not None:
            self.gateways.stop()
            self.gateways = None
        if self.runtime is not None:
            self.runtime.stop()
            self.runtime = None
        self._close_store()
        if self._server is not None:
            # Free what the stage held (the scoring layer alone is 136 MB) for the rest of the process.
            with contextlib.suppress(OSError):
                urllib.request.urlopen(
                    urllib.request.Request(f"{self.endpoint_url}/moto-api/reset", method="POST"), timeout=30
                )
            self._server.stop()
            self._server = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env = {}
        sluice_aws.reset_clients()

    def _close_store(self) -> None:
        """Compact the journal into a snapshot once nothing writes any more (the journal stays on failure)."""
        store, self.store = self.store, None
        if store is None:
            return
        try:
            if self._server is not None and store.file is not None:
                store.compact()
        except Exception:  # stopping must still release the ports; the journal is still there
            log.exception("compacting the local journal failed")
        finally:
            store.close()

    def __enter__(self) -> LocalAws:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ lookups

    def client(self, service: str) -> Any:
        """A boto3 client for the local server (Lambda: long read timeout, no retries)."""
        import boto3

        key = (service, self.endpoint_url)
        with self._clients_lock:
            found = self._clients.get(key)
            if found is None:
                config = INVOKE_CONFIG if service == "lambda" else sluice_aws.DEFAULT_CONFIG
                found = boto3.client(
                    service,
                    region_name=self.region,
                    endpoint_url=self.endpoint_url,
                    aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
                    aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
                    config=config,
                )
                self._clients[key] = found
            return found

    @property
    def outputs(self) -> dict[str, str]:
        """Stack outputs of every stack of the stage, by output name."""
        return {k: v for stack in self.deployed for k, v in stack.outputs.items()}

    @property
    def resources(self) -> list[Any]:
        """Every template resource of the stage with its type, physical id and support."""
        return [r for stack in self.deployed for r in stack.resources]

    def physical_id(self, logical_id_prefix: str, *, resource_type: str | None = None) -> str:
        """The physical id of the one resource whose logical id starts with the prefix.

        Raises
        ------
        NotFound
            If no resource, or more than one, matches.
        """
        found = [
            r
            for r in self.resources
            if r.logical_id.startswith(logical_id_prefix)
            and (resource_type is None or r.resource_type == resource_type)
        ]
        if len(found) != 1:
            kind = f" of type {resource_type}" if resource_type else ""
            names = ", ".join(r.logical_id for r in found[:5])
            raise NotFound(
                f"{len(found)} local resources{kind} match logical id prefix {logical_id_prefix!r}"
                + (f" ({names})" if names else "")
            )
        return found[0].physical_id

    def gateway_url(self, api: str) -> str:
        """``http://127.0.0.1:<port>/<stage>`` of a REST API, by logical id prefix, name or id."""
        if self.gateways is None:
            raise SluiceError("the local stage is not running")
        return self.gateways.url(api)

    def invoke(self, function: str, payload: Any = None, *, qualifier: str | None = None) -> Any:
        """Invoke a function in-process (no HTTP hop); returns a :class:`lambdas.InvokeResult`."""
        return self.lambda_runtime().invoke(
            function, qualifier, json.dumps(payload if payload is not None else {})
        )

    def lambda_runtime(self) -> lambdas.LambdaRuntime:
        """The warm Lambda workers of the running stage."""
        if self.runtime is None:
            raise SluiceError("the local stage is not running")
        return self.runtime

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "assembly_dir": str(self.assembly_dir),
            "stage": self.stage,
            "account": self.account,
            "region": self.region,
            "stacks": [s.to_dict() for s in self.deployed],
            "apis": self.gateways.describe() if self.gateways else [],
            "timings": self.timings.__dict__ | {"total": self.timings.total},
            "pid": os.getpid(),
            "endpoint_url": self.endpoint_url,
            "credentials": self.credentials,
        }

    def write_state(self) -> Path:
        """Write ``state.json``: what was deployed and where (read by ``sluice local status``)."""
        path = self.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=2, default=str))
        tmp.chmod(0o600)  # it holds the developer's secret key
        tmp.replace(path)
        return path


def read_state(state_dir: str | Path = DEFAULT_STATE_DIR) -> dict[str, Any] | None:
    """The last state written by a local stage in ``state_dir`` (None if there is none)."""
    path = Path(state_dir) / STATE_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text())
