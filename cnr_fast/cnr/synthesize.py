"""Stage 2: synthetic counterfactuals (Section 3.5, eqs. 4-6; Algorithm 1 lines 9-19).

A DCGAN generator G and discriminator D are trained on the forget-class training images; then B
latent codes are optimised with Adam so that G(z) minimises

    sign * L_selective + lambda_real * L_realism + lambda_smooth * L_smooth

with L_selective of eq. 6 (ops.selective_loss), L_realism = -mean log D(x) and L_smooth the total
variation (ops.tv_loss). sign = +1 is eq. 6 as printed ("paper": forget units off); sign = -1
("excite") makes images that drive the forget units on. The classifier is frozen throughout.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import dist, ops
from ..data import Split, batches
from ..errors import UserError
from ..models import Taps
from ..profiling import nvtx_range
from ..train import amp_context, progress

SIGNS = {"paper": 1.0, "excite": -1.0}


def _say(msg, quiet):
    if not quiet:
        print(msg, file=sys.stderr, flush=True)


def _levels(image_size: int) -> int:
    """Number of 2x up-samplings from 4x4 to cover the image (32 px -> 3)."""
    return max(1, math.ceil(math.log2(max(image_size, 8) / 4)))


class Generator(nn.Module):
    """DCGAN generator: z -> 4x4 -> ... -> 2^n * 4 px (tanh), resized to the dataset's image size."""

    def __init__(self, latent_dim, channels, image_size, ngf=32):
        super().__init__()
        n = _levels(image_size)
        self.image_size = image_size
        widths = [ngf * 2 ** (n - 1 - i) for i in range(n)]
        layers = [nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False), nn.BatchNorm2d(widths[0]),
                  nn.ReLU(True)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.ConvTranspose2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z):
        x = self.net(z.view(z.shape[0], -1, 1, 1))
        if x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        return x


class Discriminator(nn.Module):
    """DCGAN discriminator; returns the logit of D(x) = P(real)."""

    def __init__(self, channels, image_size, ndf=32):
        super().__init__()
        n = _levels(image_size)
        self.size = 4 * 2**n
        widths = [ndf * 2**i for i in range(n)]
        layers = [nn.Conv2d(channels, widths[0], 4, 2, 1, bias=False), nn.LeakyReLU(0.2, True)]
        for a, b in zip(widths[:-1], widths[1:]):
            layers += [nn.Conv2d(a, b, 4, 2, 1, bias=False), nn.BatchNorm2d(b), nn.LeakyReLU(0.2, True)]
        layers += [nn.Conv2d(widths[-1], 1, 4, 1, 0, bias=False)]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x):
        if x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return self.net(x).view(-1)


def _dcgan_init(m):
    if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def gan_batch_size(n_images: int, requested: int | None) -> int:
    """cfg.gan_batch_size, or auto: 64 unless that gives fewer than 25 updates an epoch (then >= 8)."""
    if requested:
        return int(requested)
    return int(min(64, max(8, n_images // 25)))


def train_gan(images: Split, cfg, *, device, seed=0, desc="synthesize: GAN", quiet=False, state=None,
              entry: str = "gan"):
    """Standard DCGAN training (non-saturating BCE, Adam 2e-4, betas 0.5/0.999) on one class's images.

    state: a resume.RunState; then G, D, both optimisers and the RNG states are saved as state entry `entry` after
    every epoch, and training continues from the last saved epoch.
    """
    torch.manual_seed(seed)
    c, s = images.x.shape[1], images.x.shape[-1]
    g = Generator(cfg.latent_dim, c, s, cfg.ngf).to(device)
    d = Discriminator(c, s, cfg.ngf).to(device)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    bs = gan_batch_size(len(images), cfg.gan_batch_size)
    steps = -(-len(images) // bs)
    last = {}
    start = 0
    saved = state.load(entry) if state is not None else None
    if saved is not None:
        from ..resume import set_rng_state

        g.load_state_dict(saved["g"])
        d.load_state_dict(saved["d"])
        opt_g.load_state_dict(saved["opt_g"])
        opt_d.load_state_dict(saved["opt_d"])
        gen.set_state(saved["gen"])
        set_rng_state(saved["rng"])
        start, last = int(saved["epoch"]), dict(saved["last"])
        _say(f"  {desc}: resumed after epoch {start}/{cfg.gan_epochs}", quiet)
    for epoch in progress(range(start, cfg.gan_epochs), desc, cfg.gan_epochs - start, quiet):
        step = 0
        for x, _ in batches(images, bs, shuffle=True, generator=gen, device=device):
            with nvtx_range("cnr/synthesize/gan_step"):
                z = torch.randn(x.shape[0], cfg.latent_dim, device=device)  # the global batch's noise
                n_global = x.shape[0]
                x, z = dist.local((x, z))  # this rank's rows of both (no-op in one process)
                share = x.shape[0] * dist.world() / n_global  # 1 in one process (see dist)
                opt_d.zero_grad(set_to_none=True)
                if share > 0:
                    fake = g(z)
                    loss_d = F.softplus(-d(x)).mean() + F.softplus(d(fake.detach())).mean()
                    (loss_d * share).backward()
                dist.all_reduce_grads(d.parameters())
                opt_d.step()
                opt_g.zero_grad(set_to_none=True)
                if share > 0:
                    loss_g = F.softplus(-d(fake)).mean()
                    (loss_g * share).backward()
                dist.all_reduce_grads(g.parameters())
                opt_g.step()
                step += 1
                if dist.active():  # every rank sees the same values, so all of them stop together
                    vals = (float(loss_d.detach()) * share, float(loss_g.detach()) * share) if share > 0 else (0, 0)
                    loss_d, loss_g = (torch.tensor(dist.mean_value(v)) for v in vals)
                _check_finite(loss_d, loss_g, stage=desc, where=f"epoch {epoch + 1}, step {step}",
                              fix="lower synth.gan_lr in a --config file, or drop --amp")
        dist.sync_buffers(g)
        dist.sync_buffers(d)
        last = {"loss_d": float(loss_d.detach()), "loss_g": float(loss_g.detach()), "batch_size": bs,
                "updates": steps * (epoch + 1)}
        if not quiet and (epoch + 1) % 10 == 0:
            print(f"  {desc} epoch {epoch + 1}/{cfg.gan_epochs}: D {last['loss_d']:.3f} G {last['loss_g']:.3f}"
                  f" ({steps} steps/epoch)", file=sys.stderr)
        if state is not None:
            from ..resume import kill_point, rng_state

            state.save(entry, {"epoch": epoch + 1, "g": g.state_dict(), "d": d.state_dict(),
                              "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "gen": gen.get_state(),
                              "rng": rng_state(), "last": last})
            kill_point(f"gan:{epoch + 1}")
    return g.eval(), d.eval(), last


def _check_finite(*losses, stage: str, where: str, fix: str) -> None:
    """The same one-line error as train.fit's for a NaN / inf loss, naming the stage and a fix."""
    for loss in losses:
        value = float(loss.detach())
        if not math.isfinite(value):
            raise UserError(f"training stage {stage!r} diverged: its loss is {value} at {where}; nothing was "
                            f"written. {fix[0].upper()}{fix[1:]}")


LATENT_FIX = "lower synth.lr in a --config file (or --lambda-real / --lambda-smooth), or drop --amp"


def unit_activations(model, x, taps):
    """Flattened tap activations (B, U_l) of x, keeping the graph."""
    with Taps(model, taps) as t:
        logits = model(x)
    return [t[n].reshape(x.shape[0], -1) for n in taps], logits


def optimise_latents(model, g, d, f_idx, r_idx, taps, cfg, *, device, amp=False, seed=0, desc="synthesize",
                     quiet=False):
    """Optimise B latent codes (Adam, cfg.lr, cfg.steps) for one forget class; returns images and a log."""
    if cfg.sign not in SIGNS:
        raise UserError(f"unknown selective-loss sign {cfg.sign!r}; choose one of {', '.join(SIGNS)}")
    sign = SIGNS[cfg.sign]
    if cfg.batch < dist.world():
        raise UserError(f"B = {cfg.batch} synthetic images per class cannot be shared by {dist.world()} processes; "
                        f"pass --synth-batch {dist.world()} or more, or start fewer processes")
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(cfg.batch, cfg.latent_dim, generator=gen)  # all B codes, drawn the same on every rank
    start, stop = dist.shard_range(cfg.batch)  # this rank optimises its contiguous share (all in one process)
    z = z[start:stop].to(device).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    frozen = [p for p in list(model.parameters()) + list(g.parameters()) + list(d.parameters()) if p.requires_grad]
    for p in frozen:  # gradients flow to z only; restored below
        p.requires_grad_(False)
    try:
        return _optimise(model, g, d, z, opt, f_idx, r_idx, taps, cfg, sign, device, amp, desc, quiet,
                         share=len(z) / cfg.batch)
    finally:
        for p in frozen:
            p.requires_grad_(True)


def _optimise(model, g, d, z, opt, f_idx, r_idx, taps, cfg, sign, device, amp, desc, quiet, share=1.0):
    """share: this rank's share of the B codes (1 in one process). Every term is a mean of per-image
    values with G, D and the classifier in eval mode, so the loss times `share` gives each code the
    gradient it has in a one-process run over all B codes."""
    fi = [f_idx[t].to(device) for t in taps]
    ri = [r_idx[t].to(device) for t in taps]

    def terms(x):
        with amp_context(device, amp):
            feats, logits = unit_activations(model, x, taps)
        sel = ops.selective_loss(feats, fi, ri, cfg.alpha)
        real = F.softplus(-d(x).float()).mean()  # -log D(x) = -log sigmoid(logit)
        tv = ops.tv_loss(x)
        return sel, real, tv, logits

    def mean_over_ranks(v) -> float:  # the one-process value of a per-image mean
        return dist.mean_value(float(v) * share * dist.world()) if dist.active() else float(v)

    with torch.no_grad():
        sel0, _, _, _ = terms(g(z))
    steps = cfg.steps if cfg.latent_opt else 0
    for step in progress(range(steps), f"{desc}: latent optimisation", steps, quiet):
        with nvtx_range("cnr/synthesize/latent_step"):
            x = g(z)
            sel, real, tv, _ = terms(x)
            loss = sign * sel + cfg.lambda_real * real + cfg.lambda_smooth * tv
            if not dist.active():  # several ranks check together after the loop instead (no rank may stop alone)
                _check_finite(loss, stage=f"{desc}: latent optimisation", where=f"step {step + 1}", fix=LATENT_FIX)
            opt.zero_grad(set_to_none=True)
            (loss * share).backward()
            opt.step()
    with torch.no_grad():
        x = g(z)
        sel, real, tv, logits = terms(x)
    hist = dist.all_reduce_sum_(torch.bincount(logits.argmax(1), minlength=logits.shape[1]))
    sel0, sel, real, tv = (mean_over_ranks(v) for v in (sel0, sel, real, tv))
    _check_finite(torch.tensor(sel), stage=f"{desc}: latent optimisation", where=f"step {steps}", fix=LATENT_FIX)
    x = dist.gather_rows(x.detach().float())
    if not quiet:
        print(f"  {desc}: {steps} latent steps, eq. 6 value {sel0:.3f} -> {sel:.3f}", file=sys.stderr)
    log = {"selective_before": sel0, "selective_after": sel, "realism_after": real, "tv_after": tv, "steps": steps,
           "model_pred_hist": hist.cpu().tolist()}
    return x.cpu(), log


GAN_FIELDS = ("gan_epochs", "gan_batch_size", "gan_lr", "latent_dim", "ngf")


def synthesize(model, train: Split, detection, cfg, *, device, amp=False, seed=0, quiet=False, reuse=None,
               state=None):
    """For each forget class: train a GAN on its images, optimise B latents. Returns (images, labels, log).

    reuse: optional dict shared by runs on the same data and seed (CNR variants in compare /
    ablate): a GAN with the same class, seed and GAN settings is trained once. The GAN does not depend
    on the classifier, so reuse changes nothing but time; log[class]["gan_reused_s"] is the training
    time of a reused GAN, which the caller charges to the run.

    state: a resume.RunState: each class's GAN (per epoch) and its optimised images are saved there
    and reused by a rerun (`gan-<class>`, `latents-<class>`).
    """
    import time

    model.eval()
    images, owners, logs = [], [], {}
    for i, c in enumerate(detection.forget):
        done = state.load(f"latents-{c}") if state is not None else None
        if done is not None:
            from ..resume import set_rng_state

            set_rng_state(done["rng"])
            images.append(done["x"])
            owners.append(torch.full((len(done["x"]),), c, dtype=torch.long))
            logs[str(c)] = dict(done["log"])
            _say(f"  synthesize class {c}: synthetic images reused from {state.path}", quiet)
            continue
        own = train.of_classes([c])
        key = ("gan", int(c), seed + i, len(own), tuple(getattr(cfg, f) for f in GAN_FIELDS))
        reused = 0.0
        if reuse is not None and key in reuse:
            g, d, gan_log, reused = reuse[key]
            _say(f"  synthesize: GAN class {c} reused (trained in {reused:.1f}s, charged to this run)", quiet)
        else:
            t0 = time.perf_counter()
            g, d, gan_log = train_gan(own, cfg, device=device, seed=seed + i, desc=f"synthesize: GAN class {c}",
                                      quiet=quiet, state=state, entry=f"gan-{c}")
            if reuse is not None:
                reuse[key] = (g, d, gan_log, time.perf_counter() - t0)
        gan_log = {**gan_log, "gan_reused_s": reused}
        fi = {t: detection.f_idx[t][i] for t in detection.taps}
        ri = {t: detection.r_idx[t][i] for t in detection.taps}
        x, log = optimise_latents(model, g, d, fi, ri, detection.taps, cfg, device=device, amp=amp, seed=seed + i,
                                  desc=f"synthesize class {c}", quiet=quiet)
        images.append(x)
        owners.append(torch.full((len(x),), c, dtype=torch.long))
        logs[str(c)] = {**gan_log, **log}
        if state is not None:
            from ..resume import kill_point, rng_state

            state.save(f"latents-{c}", {"x": x, "log": logs[str(c)], "rng": rng_state()})
            kill_point(f"latents:{c}")
    return torch.cat(images), torch.cat(owners), logs
