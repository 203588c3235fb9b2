"""The FHIR R4 EHR connector: :mod:`.mapping` (pure: notes, transcripts and providers to FHIR
JSON, validated with ``fhir.resources``) and :mod:`.client` (:class:`~.client.FhirClient`, the
:class:`~carehook.workflows.ports.Ehr` adapter on an injected ``httpx.AsyncClient``).

Nothing is re-exported here, so importing the pure mapping never imports httpx.
"""
