"""Training side (torch): the dual-output network, RSNA data, training and evaluation."""
