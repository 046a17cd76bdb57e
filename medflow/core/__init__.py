"""medflow core: errors, atomic files, feature names, PixelSpec, ModelContract (the bottom layer)."""
