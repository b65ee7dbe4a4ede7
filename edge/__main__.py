"""python -m rkdsc.edge --config FILE --id ID --out DIR: run one edge device (see rkdsc.edge.client.cli)."""
import sys

from rkdsc.common.process import die_with_parent
from rkdsc.edge.client import cli

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
sys.exit(cli())
