"""The edge device service: student encoder + CAT encoder streaming channel symbols to the
base-station relay (``edge.client``), and the whole-topology orchestrator ``rkdsc demo``
(``edge.demo``). ``python -m edge --config FILE --id ID --out DIR`` runs one device.
"""
