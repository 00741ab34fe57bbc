"""Each CNR stage timed with cnr-fast's own function and with a plain torch loop (same arithmetic).

Configuration: the default run's (mnist5k, ResNet-18 width 0.125, RunConfig() defaults), on CPU.
For every stage the two sides start from the same weights and seeds, run the same model, batch
size, optimiser, loss and number of steps; the plain side is a bare loop (no progress bar, no
per-step loss read-back, no hooks, no dispatch, no NVTX), written here. After timing, one more run
of each side checks that they computed the same thing (`same_result`: parameters / outputs equal to
1e-5), so the ratio measures overhead, not a different workload.

Stages (what is timed on each side):

1. `train_classifier`: cnr_fast.train.train_classifier for one epoch over `--train-steps` x 128
   images (TrainConfig defaults: Adam lr 2e-3, wd 5e-4, no augmentation);
2. `gan`: cnr_fast.cnr.synthesize.train_gan, 1 epoch on the forget class's training images (the
   auto GAN batch size); the plain side builds the same Generator / Discriminator (model code, not
   loop code) and runs the same non-saturating BCE updates;
3. `latents`: optimise_latents, `--latent-steps` Adam steps on B = 64 latents through G, the
   classifier (taps L1..L4, eq. 6), D and TV (cnr-fast also runs one no-grad pass before and after,
   as it does in a run: that is part of its cost);
4. `reset`: cnr_fast.cnr.reset.reset, 1 epoch of eq. 7 (retain batch 128 + synthetic batch 32 in one
   forward pass, CE + CE + gamma/2 L2 pull), no stabilisation epochs;
5. `class_means`: detect.class_means, one no-grad pass over the training split at L1..L4 with
   per-class sums (batch 256);
6. `audit_features`: cnr_fast.audit.features.extract over the test split (all taps, pooled `vec`,
   `full` units, logits, class sums), the audit's feature pass.

The ratio per stage is median(cnr-fast) / median(plain) over repetitions that alternate the order
of the two sides (the machine is shared: absolute times move, ratios within a run much less). The
per-rep ratios are recorded too. A precision row times one training step of the default model
(batch 128) in fp32 and under bf16 autocast (forced with CNR_FAST_CPU_AMP=force, through cnr-fast's
amp_context), interleaved.

    OMP_NUM_THREADS=1 python -m bench.bench_cpu_stages --threads 1            # ~8 min on 2 busy cores
    OMP_NUM_THREADS=1 python -m bench.bench_cpu_stages --threads 1 --quick    # seconds (smoke test)
    python -m bench.bench_cpu_stages --profile reset                         # cProfile of cnr-fast's side
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import os
import pstats
import statistics
import subprocess
import time

import torch
import torch.nn.functional as F

from bench.harness import write_results

STAGES = ("train_classifier", "gan", "latents", "reset", "class_means", "audit_features")
TARGET_RATIO = 1.5
TAPS = ["L1", "L2", "L3", "L4"]


# --------------------------------------------------------------------------------------------- plain
def to_float(x):
    return x.float().div_(127.5).sub_(1.0)


def forward_taps(m, x):
    """ResNet forward with the tap outputs L0..L4 returned explicitly (no hooks)."""
    h = m.relu(m.bn1(m.conv1(x)))
    l0 = h
    h = m.maxpool(h)
    l1 = m.layer1(h)
    l2 = m.layer2(l1)
    l3 = m.layer3(l2)
    l4 = m.layer4(l3)
    logits = m.fc(torch.flatten(m.avgpool(l4), 1))
    return {"L0": l0, "L1": l1, "L2": l2, "L3": l3, "L4": l4}, logits


def plain_train(m, split, bs, lr, wd, seed=0):
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(m.parameters(), lr=lr, weight_decay=wd)
    m.train()
    order = torch.randperm(len(split), generator=gen)
    for i in range(0, len(split), bs):
        idx = order[i : i + bs]
        loss = F.cross_entropy(m(to_float(split.x[idx])), split.y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    m.eval()
    return m


def plain_gan(images, cfg, bs, seed=0):
    from cnr_fast.cnr.synthesize import Discriminator, Generator

    torch.manual_seed(seed)
    c, s = images.x.shape[1], images.x.shape[-1]
    g, d = Generator(cfg.latent_dim, c, s, cfg.ngf), Discriminator(c, s, cfg.ngf)
    opt_g = torch.optim.Adam(g.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), lr=cfg.gan_lr, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(images), generator=gen)
    for i in range(0, len(images), bs):
        x = to_float(images.x[order[i : i + bs]])
        fake = g(torch.randn(x.shape[0], cfg.latent_dim))
        loss_d = F.softplus(-d(x)).mean() + F.softplus(d(fake.detach())).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        loss_g = F.softplus(-d(fake)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
    return g.eval(), d.eval()


def plain_latents(model, g, d, fi, ri, cfg, sign, seed=0):
    """Weights already frozen by the caller (setup); gradients flow to z only."""
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(cfg.batch, cfg.latent_dim, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([z], lr=cfg.lr)
    for _ in range(cfg.steps):
        x = g(z)
        taps, _ = forward_taps(model, x)
        sel = x.new_zeros(())
        for t, f_i, r_i in zip(TAPS, fi, ri):
            f = taps[t].reshape(x.shape[0], -1)
            sel = sel + (f[:, f_i].mean(1) - cfg.alpha * f[:, r_i].mean(1)).mean()
        sel = sel / len(TAPS)
        real = F.softplus(-d(x)).mean()
        dx = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
        dy = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
        tv = torch.sqrt(dx**2 + dy**2 + 1e-8).sum(dim=(1, 2, 3)).mean()
        loss = sign * sel + cfg.lambda_real * real + cfg.lambda_smooth * tv
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        return g(z)


def plain_reset(original, retain, synth_x, retain_classes, cfg, seed=0):
    model = copy.deepcopy(original)
    params = list(model.parameters())
    theta0 = [p.detach().clone() for p in params]
    gen = torch.Generator().manual_seed(seed)
    rc = torch.as_tensor(sorted(retain_classes))
    y_syn = rc[torch.randint(len(rc), (len(synth_x),), generator=gen)]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    model.train()
    order = torch.randperm(len(retain), generator=gen)
    nsyn = min(cfg.synth_batch_size, len(synth_x))
    for i in range(0, len(retain), cfg.batch_size):
        idx = order[i : i + cfg.batch_size]
        x, y = to_float(retain.x[idx]), retain.y[idx]
        j = torch.randint(len(synth_x), (nsyn,), generator=gen)
        logits = model(torch.cat([synth_x[j], x]))
        loss = F.cross_entropy(logits[:nsyn], y_syn[j]) + F.cross_entropy(logits[nsyn:], y)
        loss = loss + 0.5 * cfg.gamma * sum((p - p0).square().sum() for p, p0 in zip(params, theta0))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def plain_class_means(model, split, num_classes, bs=256):
    model.eval()
    sums = {t: None for t in TAPS}
    for i in range(0, len(split), bs):
        x, y = to_float(split.x[i : i + bs]), split.y[i : i + bs]
        taps, _ = forward_taps(model, x)
        for t in TAPS:
            f = taps[t].reshape(len(x), -1)
            s = torch.zeros(num_classes, f.shape[1]).index_add_(0, y, f)
            sums[t] = s if sums[t] is None else sums[t] + s
    counts = torch.bincount(split.y, minlength=num_classes)
    return {t: sums[t] / counts.clamp_min(1).unsqueeze(1).float() for t in TAPS}


@torch.no_grad()
def plain_features(model, split, num_classes, max_dim=1024, bs=256):
    """The audit's pass: pooled vec, full units, logits and class sums at L0..L4."""
    from cnr_fast.audit.features import pooled_side

    model.eval()
    names = ["L0"] + TAPS
    vec, full, logits, sums = {t: [] for t in names}, {t: [] for t in names}, [], {}
    for i in range(0, len(split), bs):
        x, y = to_float(split.x[i : i + bs]), split.y[i : i + bs]
        taps, out = forward_taps(model, x)
        logits.append(out)
        for t in names:
            a = taps[t]
            n, c, h, w = a.shape
            v = a
            if c * h * w > max_dim:
                s = pooled_side(c, max(h, w), max_dim)
                v = F.adaptive_avg_pool2d(a, (min(s, h), min(s, w)))
            vec[t].append(v.reshape(n, -1))
            u = a.reshape(n, -1)
            full[t].append(u)
            s = torch.zeros(num_classes, u.shape[1]).index_add_(0, y, u)
            sums[t] = s if t not in sums else sums[t] + s
    return {t: torch.cat(v) for t, v in vec.items()}, torch.cat(logits), sums


# ------------------------------------------------------------------------------------------ harness
def interleaved(cnr_side, plain_side, reps: int, warmup: int) -> dict:
    """Each side = (setup() -> state, run(state)); only run is timed. Sides alternate who goes first."""
    for _ in range(warmup):
        for setup, run in (cnr_side, plain_side):
            run(setup())
    t = {"cnr_fast": [], "plain": []}
    last = {}
    for r in range(reps):
        order = [("cnr_fast", cnr_side), ("plain", plain_side)]
        if r % 2:
            order.reverse()
        for name, (setup, run) in order:
            state = setup()
            t0 = time.perf_counter()
            last[name] = run(state)
            t[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in t.items()}
    per_rep = [a / b for a, b in zip(t["cnr_fast"], t["plain"])]
    return {"cnr_fast_s": t["cnr_fast"], "plain_s": t["plain"], "cnr_fast_median_s": med["cnr_fast"],
            "plain_median_s": med["plain"], "ratio": med["cnr_fast"] / med["plain"], "per_rep_ratio": per_rep,
            "ratio_min_max": [min(per_rep), max(per_rep)], "_outputs": (last["cnr_fast"], last["plain"])}


def max_diff(a, b) -> float:
    if isinstance(a, torch.nn.Module):
        a, b = list(a.state_dict().values()), list(b.state_dict().values())
    elif isinstance(a, dict):
        a, b = [a[k] for k in sorted(a)], [b[k] for k in sorted(a)]
    elif isinstance(a, torch.Tensor):
        a, b = [a], [b]
    return max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in zip(a, b))


def lscpu_model() -> str | None:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return next((l.split(":", 1)[1].strip() for l in out.splitlines() if l.startswith("Model name")), None)


def build_workloads(args):
    """{stage: (cnr_side, plain_side, check)} for the default run's configuration."""
    from cnr_fast.audit.features import extract
    from cnr_fast.cnr.detect import class_means
    from cnr_fast.cnr.reset import reset
    from cnr_fast.cnr.synthesize import SIGNS, gan_batch_size, optimise_latents, train_gan
    from cnr_fast.config import RunConfig
    from cnr_fast.data import load_dataset
    from cnr_fast.models import build_model
    from cnr_fast.train import train_classifier

    cfg = RunConfig()
    cpu = torch.device("cpu")
    ds = load_dataset(cfg.data)
    nc, forget = ds.num_classes, list(cfg.data.forget)
    retain_classes = [c for c in range(nc) if c not in forget]
    torch.manual_seed(0)
    base = build_model(cfg.model.arch, nc, ds.in_channels, ds.image_size, cfg.model.width).eval()
    q = args.quick
    n_train = args.train_steps * cfg.train.batch_size  # train_classifier: 1 epoch over this many images
    train_split = ds.train.subset(slice(0, n_train))
    own = ds.train.of_classes(forget)
    if q:
        own = own.subset(slice(0, 16))
    gan_bs = gan_batch_size(len(own), cfg.synth.gan_batch_size)
    scfg_gan = cfg.synth.__class__(**{**cfg.synth.__dict__, "gan_epochs": 1})
    scfg_lat = cfg.synth.__class__(**{**cfg.synth.__dict__, "steps": args.latent_steps})
    # one reset epoch at the paper's step size (a run chooses it on validation; the time per epoch is the same)
    rcfg = cfg.reset.__class__(**{**cfg.reset.__dict__, "epochs": 1, "stabilize_epochs": 0, "lr": 1e-4})
    retain = ds.train.of_classes(retain_classes)
    if q:
        retain = retain.subset(slice(0, rcfg.batch_size))
    means_split = ds.train.subset(slice(0, 256)) if q else ds.train
    feat_split = ds.test.subset(slice(0, 256)) if q else ds.test
    tcfg = cfg.train.__class__(**{**cfg.train.__dict__, "epochs": 1})

    # a generator / discriminator and units for the latent stage (their values do not change the cost)
    from cnr_fast.cnr.synthesize import Discriminator, Generator

    torch.manual_seed(0)
    g0 = Generator(cfg.synth.latent_dim, ds.in_channels, ds.image_size, cfg.synth.ngf).eval()
    d0 = Discriminator(ds.in_channels, ds.image_size, cfg.synth.ngf).eval()
    gen = torch.Generator().manual_seed(1)
    units = {t: int(torch.tensor(forward_taps(base, to_float(ds.train.x[:1]))[0][t].shape[1:]).prod()) for t in TAPS}
    f_idx = {t: torch.randperm(units[t], generator=gen)[: cfg.detect.k] for t in TAPS}
    r_idx = {t: torch.randperm(units[t], generator=gen)[: cfg.detect.k] for t in TAPS}
    synth_x = torch.rand(cfg.synth.batch, ds.in_channels, ds.image_size, ds.image_size, generator=gen) * 2 - 1

    def fresh():
        return copy.deepcopy(base)

    def frozen():
        m, g, d = copy.deepcopy(base), copy.deepcopy(g0), copy.deepcopy(d0)
        for p in list(m.parameters()) + list(g.parameters()) + list(d.parameters()):
            p.requires_grad_(False)
        return m, g, d

    def w(stage, cnr_run, plain_run, cnr_setup=fresh, plain_setup=fresh):
        return stage, ((cnr_setup, cnr_run), (plain_setup, plain_run))

    sign = SIGNS[cfg.synth.sign]
    workloads = dict([
        w("train_classifier",
          lambda m: train_classifier(m, train_split, tcfg, device=cpu, quiet=True) and m,
          lambda m: plain_train(m, train_split, tcfg.batch_size, tcfg.lr, tcfg.weight_decay)),
        w("gan",
          lambda _: train_gan(own, scfg_gan, device=cpu, quiet=True)[0],
          lambda _: plain_gan(own, scfg_gan, gan_bs)[0], lambda: None, lambda: None),
        w("latents",
          lambda s: optimise_latents(s[0], s[1], s[2], f_idx, r_idx, TAPS, scfg_lat, device=cpu, quiet=True)[0],
          lambda s: plain_latents(s[0], s[1], s[2], [f_idx[t] for t in TAPS], [r_idx[t] for t in TAPS], scfg_lat,
                                  sign),
          lambda: (base, copy.deepcopy(g0), copy.deepcopy(d0)), frozen),
        w("reset",
          lambda m: reset(m, retain, synth_x, retain_classes, rcfg, device=cpu, quiet=True)[0],
          lambda m: plain_reset(m, retain, synth_x, retain_classes, rcfg)),
        w("class_means",
          lambda m: class_means(m, means_split, TAPS, nc, device=cpu, batch_size=cfg.detect.batch_size,
                                quiet=True)[0],
          lambda m: plain_class_means(m, means_split, nc, cfg.detect.batch_size)),
        w("audit_features",
          lambda m: (lambda f: ({t: f.vec[t] for t in f.vec}, f.logits, f.sums))(
              extract(m, feat_split, device=cpu, num_classes=nc, class_sums=True, keep_full=True)),
          lambda m: plain_features(m, feat_split, nc)),
    ])
    sizes = {"train_classifier": {"images": len(train_split), "batch": tcfg.batch_size,
                                  "steps": -(-len(train_split) // tcfg.batch_size)},
             "gan": {"images": len(own), "batch": gan_bs, "steps": -(-len(own) // gan_bs), "epochs": 1},
             "latents": {"B": cfg.synth.batch, "steps": args.latent_steps},
             "reset": {"retain_images": len(retain), "batch": rcfg.batch_size, "synth_batch": rcfg.synth_batch_size,
                       "steps": -(-len(retain) // rcfg.batch_size), "epochs": 1},
             "class_means": {"images": len(means_split), "batch": cfg.detect.batch_size},
             "audit_features": {"images": len(feat_split), "batch": 256}}
    pb = 32 if q else tcfg.batch_size
    precision = (base, to_float(ds.train.x[:pb]), ds.train.y[:pb], tcfg)
    return workloads, sizes, precision


def check_same(a, b) -> float:
    """Largest absolute difference between the outputs of the last timed run of each side."""
    if isinstance(a, tuple):
        return max(max_diff(x, y) for x, y in zip(a, b))
    return max_diff(a, b)


def precision_row(precision, reps: int, warmup: int) -> dict:
    """One training step (batch 128) of the default model: fp32 vs bf16 autocast (forced)."""
    from cnr_fast.train import amp_context

    base, x, y, tcfg = precision
    cpu = torch.device("cpu")
    old = os.environ.get("CNR_FAST_CPU_AMP")
    os.environ["CNR_FAST_CPU_AMP"] = "force"
    try:
        sides = {}
        for amp in (False, True):
            m = copy.deepcopy(base).train()
            opt = torch.optim.Adam(m.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)

            def step(m=m, opt=opt, amp=amp):
                with amp_context(cpu, amp):
                    loss = F.cross_entropy(m(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sides["bf16" if amp else "fp32"] = step
        res = interleaved((lambda: None, lambda _: sides["bf16"]()), (lambda: None, lambda _: sides["fp32"]()),
                          reps, warmup)
        res.pop("_outputs")
    finally:
        if old is None:
            os.environ.pop("CNR_FAST_CPU_AMP", None)
        else:
            os.environ["CNR_FAST_CPU_AMP"] = old
    from cnr_fast.hardware import cpu_amp_policy, cpu_info

    return {"what": f"one Adam training step, batch {len(x)}, ResNet-18 w0.125, 1x28x28", "bf16_s": res["cnr_fast_s"],
            "fp32_s": res["plain_s"], "bf16_median_s": res["cnr_fast_median_s"], "fp32_median_s": res["plain_median_s"],
            "ratio_bf16_over_fp32": res["ratio"], "per_rep_ratio": res["per_rep_ratio"],
            "bf16_instructions": cpu_info()["bf16_instructions"], "policy_without_force": cpu_amp_policy()["reason"]}


def profile_stage(side, top: int = 25) -> str:
    setup, run = side
    state = setup()
    pr = cProfile.Profile()
    pr.enable()
    run(state)
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(top)
    return buf.getvalue()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a few steps per stage, one rep (smoke test)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions per side (default 3; quick 1)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per side first (default 1; quick 0)")
    p.add_argument("--train-steps", type=int, default=None, help="classifier steps (default 10; quick 1)")
    p.add_argument("--latent-steps", type=int, default=None, help="latent Adam steps (default 20; quick 1)")
    p.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    p.add_argument("--no-precision", action="store_true", help="skip the fp32 / bf16 row")
    p.add_argument("--profile", nargs="*", default=None, choices=STAGES,
                   help="print cProfile of cnr-fast's side of these stages (no names: those over the target)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out", default=None, help="output folder (default bench/results or $CNR_FAST_BENCH_OUT)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick
    args.reps = args.reps or (1 if q else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if q else 1)
    args.train_steps = args.train_steps or (1 if q else 10)
    args.latent_steps = args.latent_steps or (1 if q else 20)

    load_before = list(os.getloadavg())
    workloads, sizes, precision = build_workloads(args)
    stages = {}
    for stage in args.stages:
        cnr_side, plain_side = workloads[stage]
        res = interleaved(cnr_side, plain_side, args.reps, args.warmup)
        res["same_result_max_abs_diff"] = check_same(*res.pop("_outputs"))
        res["same_result"] = res["same_result_max_abs_diff"] <= 1e-5
        res["size"] = sizes[stage]
        stages[stage] = res
        print(f"{stage:17s} cnr-fast {res['cnr_fast_median_s']:7.3f} s  plain {res['plain_median_s']:7.3f} s  "
              f"ratio {res['ratio']:.2f} (reps {min(res['per_rep_ratio']):.2f}-{max(res['per_rep_ratio']):.2f})"
              f"  same result {res['same_result']}  {'OK' if res['ratio'] <= TARGET_RATIO else 'OVER 1.5x'}",
              flush=True)
    payload = {"config": {k: v for k, v in vars(args).items() if k != "out"}, "target_ratio": TARGET_RATIO,
               "lscpu_model_name": lscpu_model(), "load_avg_before": load_before, "stages": stages,
               "ratios": {k: v["ratio"] for k, v in stages.items()}}
    if not args.no_precision:
        prec = precision_row(precision, max(args.reps, 3) if not q else 1, 1 if not q else 0)
        payload["precision"] = prec
        print(f"{'precision':17s} bf16 {prec['bf16_median_s']:7.3f} s  fp32 {prec['fp32_median_s']:7.3f} s  "
              f"ratio bf16/fp32 {prec['ratio_bf16_over_fp32']:.2f}  (bf16 instructions: "
              f"{prec['bf16_instructions']})", flush=True)
    if args.profile is not None:
        names = args.profile or [k for k, v in stages.items() if v["ratio"] > TARGET_RATIO]
        payload["profiles"] = {}
        for stage in names:
            text = profile_stage(workloads[stage][0])
            payload["profiles"][stage] = text
            print(f"--- cProfile, cnr-fast side of {stage} ---\n{text}")
    payload["load_avg_after"] = list(os.getloadavg())
    path = write_results("cpu_stages_cpu" + ("_quick" if q else ""), payload, out_dir=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
