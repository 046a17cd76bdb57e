"""Serving: TF Serving layout and API, an embedded TF Serving-compatible server, and a client.

Modules: :mod:`serving.server` (ModelServer), :mod:`serving.manager` (versions on disk),
:mod:`serving.grpc_service` / :mod:`serving.rest` (the two APIs), :mod:`serving.batching`,
:mod:`serving.metrics`, :mod:`serving.client` (DICOM in, predictions out).
"""
