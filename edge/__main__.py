"""python -m edge --config FILE --id ID --out DIR: run one edge device (see edge.client.cli)."""
import sys

from common.process import die_with_parent
from edge.client import cli

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
sys.exit(cli())
