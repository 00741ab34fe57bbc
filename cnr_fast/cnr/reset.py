"""Stage 3: feature-extractor reset (Section 3.6, eq. 7; Algorithm 1 lines 20-23).

    L = mean CE(f(x_syn), y~) + mean CE(f(x_r), y_r) + gamma/2 ||theta - theta_0||^2

y~ drawn uniformly from the retain classes: once per synthetic image (relabel="once", Algorithm 1
line 21) or afresh each time an image is used (relabel="step"; see README on which forgets). Each step
takes one retain batch and one synthetic batch (each CE averaged on its own); an epoch is one pass
over the retain data. Adam (weight decay 1e-4; lr cfg.lr, which pipeline.tuned_reset chooses on
validation when the config leaves it null), 10 epochs; then 5 epochs of retain-only stabilisation
(plain CE on retain data, same optimiser settings).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from ..data import Split, batches
from ..errors import UserError

RELABEL = ("once", "step")
from ..train import fit, finetune


def l2_pull(model, theta0: list[torch.Tensor]) -> torch.Tensor:
    return sum((p.float() - p0).square().sum() for p, p0 in zip(model.parameters(), theta0))


def reset(original, retain_train: Split, synth_x: torch.Tensor, retain_classes, cfg, *, device, amp=False, seed=0,
          compile=False, quiet=False, state=None):
    """Returns (unlearned model, log). cfg: ResetConfig. The original model is not modified.

    state: a resume.RunState: the model, Adam state, loss history and RNG states are saved after every
    epoch of the reset (state entry `reset`) and of the stabilisation (entry `stabilise`); a rerun continues
    after the last saved epoch.
    """
    if cfg.relabel not in RELABEL:
        raise UserError(f"unknown relabel mode {cfg.relabel!r}; choose one of {', '.join(RELABEL)}")
    if cfg.lr is None:
        raise UserError("reset() needs a step size: set reset.lr, or call cnr.pipeline.tuned_reset, which chooses "
                        "it on validation when reset.lr is null")
    model = copy.deepcopy(original).to(device)
    for p in model.parameters():
        p.requires_grad_(True)
    theta0 = [p.detach().clone().float() for p in model.parameters()]
    gen = torch.Generator().manual_seed(seed)
    retain_classes = torch.as_tensor(sorted(retain_classes))
    y_syn = retain_classes[torch.randint(len(retain_classes), (len(synth_x),), generator=gen)]
    x_syn, y_syn = synth_x.to(device), y_syn.to(device)
    steps = -(-len(retain_train) // cfg.batch_size)

    def make(epoch):
        for x, y in batches(retain_train, cfg.batch_size, shuffle=True, generator=gen, device=device):
            idx = torch.randint(len(x_syn), (min(cfg.synth_batch_size, len(x_syn)),), generator=gen)
            if cfg.relabel == "step":
                ys = retain_classes[torch.randint(len(retain_classes), (len(idx),), generator=gen)].to(device)
            idx = idx.to(device)
            yield x, y, x_syn[idx], ys if cfg.relabel == "step" else y_syn[idx]

    def loss_fn(m, batch):
        x, y, xs, ys = batch
        # One forward pass over both parts: in train mode BatchNorm would otherwise normalise an
        # all-synthetic batch with its own statistics, and the model could learn the synthetic
        # images apart from real ones through that shortcut. Each CE is still averaged on its own.
        logits = m(torch.cat([xs, x]))
        loss = F.cross_entropy(logits[: len(xs)], ys) + F.cross_entropy(logits[len(xs) :], y)
        if cfg.gamma:
            loss = loss + 0.5 * cfg.gamma * l2_pull(model, theta0)
        return loss

    saved_stab = state.load("stabilise") if state is not None else None
    saved_reset = state.load("reset") if state is not None and saved_stab is None else None
    saver = {}
    if state is not None:
        from ..resume import kill_point, rng_state, set_rng_state

        for saved in (saved_stab, saved_reset):
            if saved is not None:
                model.load_state_dict(saved["model"])
                gen.set_state(saved["gen"])
                set_rng_state(saved["rng"])
                phase = "stabilisation" if saved is saved_stab else "reset"
                if not quiet:
                    print(f"  reset: resumed after {phase} epoch {saved['epoch']}", file=__import__("sys").stderr)
                break

        def saver_for(entry, extra=None):
            def save(s):
                state.save(entry, {**s, **(extra or {}), "model": model.state_dict(), "gen": gen.get_state(),
                                  "rng": rng_state()})
                kill_point(f"{entry}:{s['epoch']}")
            return save

        saver = {"reset": saver_for("reset")}
    if saved_stab is not None:
        hist = list(saved_stab["reset_history"])
    else:
        hist = fit(model, cfg.epochs, make, loss_fn, lr=cfg.lr, weight_decay=cfg.weight_decay, device=device,
                   amp=amp, compile=compile, desc="reset", quiet=quiet, steps_per_epoch=steps, resume=saved_reset,
                   save_state=saver.get("reset"))
    if state is not None:
        saver["stabilise"] = saver_for("stabilise", {"reset_history": list(hist)})
    stab = finetune(model, retain_train, cfg.stabilize_epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                    weight_decay=cfg.weight_decay, gen=gen, device=device, amp=amp, compile=compile,
                    desc="reset: stabilise", quiet=quiet, resume=saved_stab, save_state=saver.get("stabilise"))
    return model.eval(), {"reset_loss": hist, "stabilize_loss": stab, "synthetic_labels": y_syn.cpu().tolist()}
