"""Registration: pairs of images (a pairs manifest's ``fixed`` and ``moving``, optional
masks), a Keras 3 U-Net predicting a dense displacement field warped by a spatial
transformer, Dice before/after and folding in TFMA, warped images served."""
