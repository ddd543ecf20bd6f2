"""Read a synthesized CDK cloud assembly (``cdk.out``) without needing aws-cdk-lib at run time."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from sluice.errors import SluiceError


@dataclass(frozen=True)
class StackArtifact:
    """One synthesized stack: its name, environment, template and asset manifest."""

    artifact_id: str
    stack_name: str
    stage: str
    account: str
    region: str
    template_path: Path
    assets_path: Path | None
    dependencies: tuple[str, ...] = field(default=())

    @property
    def template(self) -> dict:
        return json.loads(self.template_path.read_text())

    def resource_types(self) -> Counter:
        return Counter(r["Type"] for r in self.template.get("Resources", {}).values())


def read_assembly(outdir: str | Path) -> list[StackArtifact]:
    """Every stack of every stage in the assembly at ``outdir``, in dependency order.

    Raises
    ------
    SluiceError
        If ``outdir`` is not a synthesized cloud assembly.
    """
    root = Path(outdir)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise SluiceError(f"no cloud assembly at {root} (run `make synth` or `cdk synth -o {root}`)")
    stacks: list[StackArtifact] = []
    _collect(root, json.loads(manifest.read_text()), stage="", out=stacks)
    return _ordered(stacks)


def _collect(directory: Path, manifest: dict, *, stage: str, out: list[StackArtifact]) -> None:
    artifacts = manifest.get("artifacts", {})
    for artifact_id, artifact in artifacts.items():
        kind = artifact.get("type")
        props = artifact.get("properties", {})
        if kind == "cdk:cloud-assembly":
            nested = directory / props["directoryName"]
            nested_manifest = json.loads((nested / "manifest.json").read_text())
            _collect(nested, nested_manifest, stage=props.get("displayName", artifact_id), out=out)
        elif kind == "aws:cloudformation:stack":
            _, _, env = artifact.get("environment", "aws://unknown/unknown").partition("aws://")
            account, _, region = env.partition("/")
            assets = next(
                (
                    directory / a["properties"]["file"]
                    for dep in artifact.get("dependencies", [])
                    if (a := artifacts.get(dep, {})).get("type") == "cdk:asset-manifest"
                ),
                None,
            )
            out.append(
                StackArtifact(
                    artifact_id=artifact_id,
                    stack_name=props.get("stackName", artifact_id),
                    stage=stage,
                    account=account,
                    region=region,
                    template_path=directory / props["templateFile"],
                    assets_path=assets,
                    dependencies=tuple(
                        d for d in artifact.get("dependencies", []) if not d.endswith(".assets")
                    ),
                )
            )


def _ordered(stacks: list[StackArtifact]) -> list[StackArtifact]:
    by_id = {s.artifact_id: s for s in stacks}
    done: list[StackArtifact] = []
    seen: set[str] = set()

    def visit(stack: StackArtifact) -> None:
        if stack.artifact_id in seen:
            return
        seen.add(stack.artifact_id)
        for dep in stack.dependencies:
            if dep in by_id:
                visit(by_id[dep])
        done.append(stack)

    for stack in stacks:
        visit(stack)
    return done
