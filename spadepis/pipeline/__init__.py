"""Pipeline layer: run config (:mod:`.config`), plan (:mod:`.plan`), the shard worker (:mod:`.worker`), manifest schema and
readers (:mod:`.manifest`), run storage and the commit protocol (:mod:`.storage`), run records (:mod:`.report`), the demo (:mod:`.demo`)."""
