"""python -m rkdsc.edge --config FILE --id ID --out DIR: run one edge device (rkdsc.edge.client.cli);
python -m rkdsc.edge fleet --config FILE --id ID ... --out DIR: several devices in one process
(rkdsc.edge.fleet.cli, as ``rkdsc fleet``; rkdsc demo / bench with edges_per_process > 1)."""
import sys

from rkdsc.common.process import die_with_parent

die_with_parent()  # SIGTERM when the parent that set RKDSC_PARENT_PID (rkdsc demo / bench) dies
if sys.argv[1:2] == ["fleet"]:
    from rkdsc.edge.fleet import cli as fleet_cli

    sys.exit(fleet_cli(sys.argv[2:]))
from rkdsc.edge.client import cli

sys.exit(cli())
