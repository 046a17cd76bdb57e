"""Ingestion: the engine, label manifests, importers and TFRecord writing."""
