import sys

from kiban.cli import main

sys.exit(main())
