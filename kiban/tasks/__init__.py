"""Tasks: what kiban's models are used for, one subpackage per domain and product
(``kiban.tasks.molecules.evaluation`` / ``.properties`` / ``.design``), with thin CLIs here
(``cli.py``: ``kiban eval``, ``kiban report``; ``property_cli.py``: ``kiban property``)."""
