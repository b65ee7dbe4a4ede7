"""python -m basestation --config FILE: run the base-station relay (see basestation.relay.cli)."""
import sys

from basestation.relay import cli

sys.exit(cli())
