"""python -m basestation --config FILE: run the base-station relay (see basestation.relay.cli)."""
import sys

from common.process import die_with_parent
from basestation.relay import cli

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
sys.exit(cli())
