"""The baselines, one module each with run(original, ds, forget, cfg: RunConfig, *, device, quiet) -> (model,
info); each is registered as a method in experiments/methods.py.

Recipes (all share CNR's reset budget: BaselineConfig, Adam, weight decay 1e-4, 15 epochs, the step
size chosen on validation from tuning.ADAM_LR_GRID as CNR's reset's is;
KDU spends them as 10 epochs of its own loss + 5 retain-only like CNR, ROFT and GAU as 15 of their
own loss; RFS retrains with the original's recipe and LM trains nothing):

- rfs:  retrain from scratch on the retain classes with the original model's training recipe.
- roft: retain-only fine-tuning for the whole 15-epoch budget.
- gau:  gradient ascent on forget batches + descent on retain batches; the ascent term is
        mean_i min(CE_i, ln C), so each forget example stops contributing once its prediction is
        at chance (uniform-prediction CE = ln C): ascent stops by itself instead of wrecking the model.
        No retain-only phase: it undid the forgetting (0.36 -> 0.84 forget accuracy on mnist5k).
- kdu:  distillation from the frozen original on retain and forget batches, with the teacher's
        forget-class logits masked out (its renormalised retain distribution), temperature T.
- lm:   logit masking: forget logits set to -inf at inference; weights and hidden states untouched.
- ssd:  selective synaptic dampening (Foster et al. AAAI 2024), no training; see ssd.py.
- scrub: teacher-student max/min steps (Kurmanji et al. NeurIPS 2023), the authors' schedule; see scrub.py.
- salun: saliency-masked random labelling (Fan et al. ICLR 2024), the authors' defaults; see salun.py.
- rl:   random labelling (the literature's baseline, as SalUn's code runs it: SalUn's loop with no
        mask); see rl.py. Not `cnr-real` (CNR's reset on real forget images, a control in cnr/).

GAU and KDU put forget and retain batches through one forward pass (BatchNorm shortcut; see gau.py).
SSD, SCRUB, SalUn and RL follow their own papers' recipes and spend at most CNR's budget per candidate
(SSD: two gradient passes; SCRUB: 3 or 10 epochs; SalUn and RL: 10 epochs). The CNR controls
(`cnr-real` and the config variants) live in cnr/ and experiments/methods.py.
"""

