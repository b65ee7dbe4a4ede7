"""The edge device service: student encoder + CAT encoder streaming channel symbols to the
base-station relay (``rkdsc.edge.client``), and the whole-topology orchestrator ``rkdsc demo``
(``rkdsc.common.experiments.demo``). ``python -m rkdsc.edge --config FILE --id ID --out DIR`` runs one device;
``rkdsc.edge.fleet`` (``rkdsc fleet``) runs many devices in one process, sharing the models.
"""
