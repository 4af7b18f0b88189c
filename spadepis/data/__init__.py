"""Data layer: images (:mod:`.images`), label and instance maps (:mod:`.labelmaps`), object-store buckets (:mod:`.buckets`),
the SPADE dataset presets and their checkpoint records (:mod:`.presets`), class names (:mod:`.categories`)."""
