"""Use cases that compose the layers (demo, predict, sample review data); the CLI calls one
function of these per command and holds no policy itself."""
