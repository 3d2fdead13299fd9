"""The research harness: the offline cold-start protocol (:mod:`.evaluate`) over several
splits (:mod:`.multisplit`), the baselines (:mod:`.baselines`, :mod:`.sasrec`), the sampled
against the full softmax (:mod:`.softmax_compare`), the prequential scoring
(:mod:`.prequential`) and the report writers (:mod:`.reports`). Options that exist only for
an ablation live here, not in the production ``TrainConfig``; the service never imports this
package."""
