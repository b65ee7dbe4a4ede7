"""python -m server --config FILE: run the edge server (see server.service.cli)."""
import sys

from common.process import die_with_parent
from server.service import cli

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
sys.exit(cli())
