"""python -m server --config FILE: run the edge server (see server.service.cli)."""
import sys

from server.service import cli

sys.exit(cli())
