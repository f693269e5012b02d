#!/usr/bin/env bash
# Builds the reference environment for the MOSES parity benchmark: molsets 0.3.1's own
# `moses.get_all_metrics` on a stack it can still import (pandas 1.x for DataFrame.append,
# numpy 1.26 for np.NaN / np.row_stack, an `rdkit.six` shim). Separate from the main .venv so
# kiban's pins are untouched.  Usage: bash benchmarks/moses_parity/setup_reference_env.sh [VENV]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${1:-$ROOT/.venv-moses-ref}"
PYTHON="${PYTHON:-$("$ROOT/.venv/bin/python" -c 'import sys; print(sys._base_executable)')}"
RDKIT_VERSION="$("$ROOT/.venv/bin/python" -c 'import rdkit; print(rdkit.__version__)')"

"$PYTHON" -m venv "$VENV"
PIP="$VENV/bin/pip"
"$PIP" install -q "torch==2.13.0"
"$PIP" install -q "numpy==1.26.*" "pandas==1.5.3" "scipy<1.14" "rdkit==$RDKIT_VERSION" \
  || { echo "rdkit==$RDKIT_VERSION does not install beside numpy 1.26; taking the newest that does" >&2
       "$PIP" install -q "numpy==1.26.*" "pandas==1.5.3" "scipy<1.14" rdkit; }
"$PIP" install -q --no-deps "molsets==0.3.1" "fcd_torch==1.0.7"
# molsets imports matplotlib in moses.utils (plotting helpers only)
"$PIP" install -q matplotlib

# rdkit.six was removed from RDKit; molsets' SA/NP scorers import `iteritems` from it.
SITE="$("$VENV/bin/python" -c 'import rdkit, os; print(os.path.dirname(rdkit.__file__))')"
cat > "$SITE/six.py" <<'PY'
from six import *  # noqa: F401,F403  (shim: RDKit dropped rdkit.six; molsets still imports it)
from six import iteritems  # noqa: F401
PY
"$PIP" install -q six

"$VENV/bin/python" - <<'PY'
import importlib.metadata as md
for name in ("torch", "numpy", "pandas", "scipy", "rdkit", "molsets", "fcd_torch"):
    print(f"{name}=={md.version(name)}")
PY
