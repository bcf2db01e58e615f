"""Refresh tests/fixtures/vendor-specs/ from the vendors' published API documents.

    python scripts/vendor_specs.py DIR     # DIR holds jira/, zendesk/, autotask/ as published

The fake vendor servers in tests/backends/fakes/ check every request and answer against
these documents (openapi-core), so the copies must be faithful:
- Jira (OpenAPI 3.0.1 JSON): re-serialised compactly, content unchanged.
- Zendesk (OpenAPI 3.0.3 YAML): read as YAML 1.2, where `=` and dates stay plain strings
  (PyYAML's YAML 1.1 turns `change: =` into a `value` tag and dates into datetimes).
- Autotask (Swagger 2.0): openapi-core reads OpenAPI 3 only, so the document goes through
  swagger2openapi (the reference converter, run with npx; needs node) first.
Each is stored gzip-compressed: the three are 7 MB as text and ~0.5 MB compressed.
The Standard Webhooks test vectors are copied as they are.
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "vendor-specs"
SWAGGER2OPENAPI = "swagger2openapi@7.0.8"


def _write(name: str, document: Any) -> None:
    data = json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode()
    # mtime=0: the same document gives the same bytes, so git sees no change.
    with open(OUT / f"{name}.json.gz", "wb") as raw, gzip.GzipFile(
        fileobj=raw, mode="wb", compresslevel=9, mtime=0
    ) as gz:
        gz.write(data)


def jira(src: Path) -> None:
    _write("jira-cloud-platform.v3.openapi", json.loads(
        (src / "jira-cloud-platform.v3.openapi.json").read_text()))


def zendesk(src: Path) -> None:
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import SafeConstructor

    yaml = YAML(typ="safe", pure=True)
    for tag in ("tag:yaml.org,2002:value", "tag:yaml.org,2002:timestamp"):
        yaml.constructor.add_constructor(tag, SafeConstructor.construct_yaml_str)
    with open(src / "zendesk-support-api.oas.yaml") as fh:
        _write("zendesk-support-api.openapi", yaml.load(fh))


def autotask(src: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "autotask.json"
        subprocess.run(
            ["npx", "--yes", SWAGGER2OPENAPI, "--indent", "", "--outfile", str(out),
             str(src / "autotask-psa-rest-v1.swagger.json")],
            check=True,
        )
        _write("autotask-psa-rest-v1.openapi", json.loads(out.read_text()))


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    src = Path(argv[1])
    OUT.mkdir(parents=True, exist_ok=True)
    jira(src / "jira")
    zendesk(src / "zendesk")
    autotask(src / "autotask")
    shutil.copyfile(src / "standard-webhooks" / "test-vectors.json",
                    OUT / "standard-webhooks.test-vectors.json")
    for vendor in ("jira", "zendesk", "autotask", "standard-webhooks"):
        for extra in (src / vendor).iterdir():
            if extra.name == "SOURCE.txt" or extra.name.startswith("LICENSE"):
                shutil.copyfile(extra, OUT / f"{vendor}.{extra.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
