"""A trained network's life on the chip: deployed from weights trained elsewhere, evaluated later,
followed as it drifts, compensated and refreshed."""
