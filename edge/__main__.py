"""python -m edge --config FILE --id ID --out DIR: run one edge device (see edge.client.cli)."""
import sys

from edge.client import cli

sys.exit(cli())
