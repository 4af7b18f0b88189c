"""Models layer: SPADE (:mod:`.spade`), PhotoWCT and WCT16x (:mod:`.photowct`), whitening and colouring (:mod:`.wct`),
closed-form smoothing (:mod:`.smoothing`), the stylizer interface (:mod:`.stylizers`), checkpoint reading (:mod:`.checkpoints`)."""
