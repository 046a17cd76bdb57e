"""Task plug-ins: one subpackage per task behind medflow.core.tasks.Task."""
