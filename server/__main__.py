"""python -m rkdsc.server --config FILE: run the edge server (see rkdsc.server.service.cli)."""
import sys

from rkdsc.common.process import die_with_parent
from rkdsc.server.service import cli

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
sys.exit(cli())
