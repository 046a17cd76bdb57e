"""Model code run by Transform and Trainer (no orchestration imports)."""
