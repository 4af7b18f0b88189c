"""Pipeline layer: run config (:mod:`.config`), plan (:mod:`.plan`), the shard worker (:mod:`.worker`), manifest schema and
readers (:mod:`.manifest`), run storage and the commit protocol (:mod:`.storage`), run records (:mod:`.report`), the demo (:mod:`.demo`);
credentials by reference and redaction (:mod:`.secrets`), failure taxonomy (:mod:`.failures`), the run folder's
lease (:mod:`.lease`), garbage collection of crashed attempts (:mod:`.gc`); style pools, the style index and
selection (:mod:`.styles`), per-row quality scores (:mod:`.quality`), the contact sheet with style photos and scores (:mod:`.sheet`)."""
