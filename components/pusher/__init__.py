"""Pusher that writes blessed models to a TF Serving layout with a model contract."""
