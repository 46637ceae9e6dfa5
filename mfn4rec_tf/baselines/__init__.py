"""The paper's baselines (Sec. 4.2), SASRec and the popularity reference, with MFN4Rec's contract.

Every builder returns a functional `keras.Model` with the inputs of `mfn4rec_tf.heads.model_inputs`
for the modalities it reads and the outputs of `mfn4rec_tf.heads.model_head` (`logits` over every
item, `user_representation`), in either output mode, with layers named `padding_mask`, `fc_out` and
`item_logits`. So `fit`, `evaluate`, `tune`, `compare` and `export` treat them exactly as MFN4Rec,
and `with_output_mode` works on them. What each model is (builder, loss, modalities, settings) is
its entry in `mfn4rec_tf.registry`; this package only holds the builders.

Modules (each docstring cites the paper it implements and the readings we chose):

- `bpr`: `bpr`, `vbpr` (pairwise BPR loss, `bpr_loss`)
- `sequential`: `lstm`, `sasrec` (item IDs only)
- `multimodal`: `p-rnn`, `mv-rnn-con`, `mv-rnn-fus`, `mv-rnn-3mdae`, `vcsrs`
- `popularity`: `pop` (the most frequent training items)
"""
