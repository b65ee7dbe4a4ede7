"""python -m rkdsc.basestation --config FILE: run the base-station relay (see rkdsc.basestation.relay.cli)."""
import sys

from rkdsc.common.process import die_with_parent
from rkdsc.basestation.relay import cli

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
sys.exit(cli())
