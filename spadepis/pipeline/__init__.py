"""Pipeline layer, in the order a run's data flows: run config (:mod:`.config`), preflight checks (:mod:`.preflight`),
plan (:mod:`.plan`), the shard worker (:mod:`.worker`) with one source's loading (:mod:`.items`), the per-process model
cache (:mod:`.model_cache`), the manifest schema and row builder (:mod:`.schema`) and the shard writer (:mod:`.writer`),
run storage and the commit protocol (:mod:`.storage`); manifest readers (:mod:`.manifest`), run records
(:mod:`.report`), the demo (:mod:`.demo`);
credentials by reference and redaction (:mod:`.secrets`), failure taxonomy (:mod:`.failures`), the run folder's
lease (:mod:`.lease`), garbage collection of crashed attempts (:mod:`.gc`); style pools, the style index and
selection (:mod:`.styles`), per-row quality scores (:mod:`.quality`), the contact sheet with style photos and scores (:mod:`.sheet`)."""
