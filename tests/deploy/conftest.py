"""Fixtures for the deployment checks: the external tools and the rendered manifests.

A missing tool FAILS the test that needs it (see ``_deploy_helpers.find_tool``).
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from tests.deploy._deploy_helpers import OVERLAYS, build, find_tool


@pytest.fixture(scope="session")
def kustomize() -> str:
    return find_tool("kustomize")


@pytest.fixture(scope="session")
def promtool() -> str:
    return find_tool("promtool")


@pytest.fixture(scope="session")
def checkov() -> str:
    return find_tool("checkov")


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    return find_tool("kubernetes-validate")


@pytest.fixture(scope="session")
def rendered_text(kustomize: str) -> dict[str, str]:
    """``{overlay: kustomize build output}`` for deploy/k8s/cpu and deploy/k8s/gpu."""
    return {o: build(kustomize, f"deploy/k8s/{o}") for o in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[dict[str, Any]]]:
    """``{overlay: [resource, ...]}``."""
    return {o: [d for d in yaml.safe_load_all(text) if d] for o, text in rendered_text.items()}
