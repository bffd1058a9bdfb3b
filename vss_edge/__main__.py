import sys

from vss_edge.cli import main

sys.exit(main())
