"""The model registry: append-only versions under ``<project>/models/<name>/v<N>/``.

Each version is a folder holding the artifact (``model.txt``, LightGBM's own text format, or
``model.pkl`` for scikit-learn estimators) and ``model.json``: what was trained on what (feature
names, the project fingerprint and each feature definition's digest, the event type, the target
label, the data window), how well it did on the validation split, with which library versions,
when. A version is written into a hidden temporary folder and renamed into place, so that a reader
never sees half a version and two trainings never take the same number; versions are never
overwritten (retire them in the strategy instead).

The folder lives in the project, next to the definitions it was trained on, so that it is
reviewed, versioned and deployed with them (large artifacts can go to git LFS).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from decisionloop.errors import DefinitionError, NotFoundError, Problem, StorageError

__all__ = ["MODELS_DIR", "ModelRegistry", "ModelVersion"]

MODELS_DIR = "models"
METADATA = "model.json"
ARTIFACTS = {"lightgbm": "model.txt", "sklearn": "model.pkl"}
_VERSION = re.compile(r"^v([1-9][0-9]*)$")
_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


@dataclass(frozen=True)
class ModelVersion:
    name: str
    version: int
    path: Path  # the version's folder
    metadata: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.metadata.get("kind", ""))

    @property
    def feature_names(self) -> list[str]:
        return [str(n) for n in self.metadata.get("feature_names", [])]

    @property
    def artifact(self) -> Path:
        return self.path / ARTIFACTS.get(self.kind, "model.txt")

    def load(self) -> Any:
        """The fitted model: a ``lightgbm.Booster`` or a scikit-learn estimator.

        The artifact's digest must match the one recorded at training. A pickle runs code when
        loaded, like the project's own definitions it is trusted as part of the project folder;
        the digest makes sure it is the file the training wrote.
        """
        try:
            data = self.artifact.read_bytes()
        except OSError as exc:
            raise NotFoundError(
                f"model {self.name} v{self.version} has no artifact",
                [Problem(str(self.artifact), f"cannot read it: {exc.strerror}")],
            ) from exc
        if hashlib.sha256(data).hexdigest() != self.metadata.get("artifact_sha256"):
            raise StorageError(
                f"model {self.name} v{self.version} artifact changed since training",
                [Problem(str(self.artifact), "its SHA-256 differs from model.json")],
            )
        if self.kind == "lightgbm":
            import lightgbm

            return lightgbm.Booster(model_str=data.decode())
        if self.kind == "sklearn":
            return pickle.loads(data)  # trusted: see above
        raise StorageError(
            f"model {self.name} v{self.version}: unknown kind {self.kind!r}",
            [Problem(str(self.path / METADATA), "kind must be lightgbm or sklearn")],
        )


class ModelRegistry:
    def __init__(self, project_root: Path) -> None:
        self.root = Path(project_root) / MODELS_DIR

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and _NAME.match(p.name))

    def versions(self, name: str) -> list[int]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = (_VERSION.match(p.name) for p in folder.iterdir() if p.is_dir())
        return sorted(int(m.group(1)) for m in found if m)

    def all(self) -> list[ModelVersion]:
        return [self.get(name, v) for name in self.names() for v in self.versions(name)]

    def get(self, name: str, version: int) -> ModelVersion:
        path = self.root / name / f"v{version}"
        try:
            metadata = orjson.loads((path / METADATA).read_bytes())
        except FileNotFoundError as exc:
            known = ", ".join(f"v{v}" for v in self.versions(name)) or "none"
            raise NotFoundError(
                f"no model {name} v{version}",
                [Problem(str(path), f"not in the registry (versions of {name!r}: {known})")],
            ) from exc
        except (OSError, orjson.JSONDecodeError) as exc:
            raise StorageError(
                f"model {name} v{version} is unreadable", [Problem(str(path / METADATA), str(exc))]
            ) from exc
        return ModelVersion(name, version, path, metadata)

    def register(
        self,
        name: str,
        kind: str,
        write_artifact: Callable[[Path], None],
        metadata: dict[str, Any],
    ) -> ModelVersion:
        """Write a new version (the next number) and return it; earlier ones stay untouched."""
        if not _NAME.match(name):
            raise DefinitionError(
                f"bad model name {name!r}",
                [Problem("name", "lowercase letters, digits and _, starting with a letter")],
            )
        if kind not in ARTIFACTS:
            raise DefinitionError(f"unknown model kind {kind!r}", [Problem("kind", str(kind))])
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        try:
            artifact = staging / ARTIFACTS[kind]
            write_artifact(artifact)
            digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
            for _ in range(100):  # a concurrent training may take the number first
                version = max(self.versions(name), default=0) + 1
                document = {
                    **metadata,
                    "name": name,
                    "version": version,
                    "kind": kind,
                    "artifact_sha256": digest,
                }
                (staging / METADATA).write_bytes(
                    orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS)
                )
                try:
                    os.rename(staging, folder / f"v{version}")
                except OSError:  # the number was taken meanwhile: try the next one
                    continue
                return self.get(name, version)
            raise StorageError(f"could not register model {name}", [Problem(str(folder), "busy")])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
