"""The sandbox: fake vendor APIs and a FHIR server, for trying workflows without real accounts.

:mod:`carehook.sandbox.abridge`, :mod:`carehook.sandbox.healthie` and
:mod:`carehook.sandbox.openevidence` fake the vendor APIs that :mod:`carehook.connectors` call
(data and webhook registration); :mod:`carehook.sandbox.fhir` is an in-memory FHIR R4 server;
:mod:`carehook.sandbox.app` mounts them in one ASGI app (``carehook sandbox`` serves it on
loopback). Every fake answers for any id with fictional, deterministic content and has test hooks
(injected failures, recorded requests). Nothing here is imported by the gateway itself.
"""
