"""Data layer: images (:mod:`.images`), label and instance maps (:mod:`.labelmaps`), the SPADE dataset presets (:mod:`.presets`)."""
