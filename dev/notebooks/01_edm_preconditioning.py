# ---
# jupyter:
#   jupytext:
#     notebook_metadata_filter: kernelspec
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python (diamond-lite)
#     language: python
#     name: diamond-lite
# ---

# %% [markdown]
# # 01 · EDM: preconditioning and the training objective
#
# DIAMOND's world model is a **diffusion model**: it makes the next frame of the game by starting from pure noise
# and removing that noise a little at a time. The noise is removed by a **denoiser** `D(x_noisy, σ)`, a network
# that receives a frame drowned in Gaussian noise of standard deviation `σ` and returns its best guess of the clean
# frame. DIAMOND (Alonso et al. 2024, Sections 2 and 3) builds this denoiser in the **EDM** framework of Karras et
# al., *Elucidating the Design Space of Diffusion-Based Generative Models* (NeurIPS 2022; "Karras" below). This
# notebook builds EDM's pieces one by one on real Atari frames:
#
# 1. **forward noising**: what a frame looks like at each `σ`;
# 2. **preconditioning**: the four coefficients that wrap the raw network, which you write yourself;
# 3. **why EDM**: we measure the scale of the network's target for ε-prediction, x0-prediction and EDM;
# 4. DIAMOND's **offset noise** and the effective `σ` it implies;
# 5. the **log-normal** distribution of training noise levels;
# 6. a small **unconditional denoiser** trained on Breakout frames with the EDM loss, its loss per noise level,
#    and what it predicts at high and low noise;
# 7. a first look at **sampling** (Karras schedule, Euler steps, 8-bit quantisation); notebook 03 goes deeper.
#
# The world model of notebook 02 is the same thing with the past frames and actions as extra inputs: everything
# here carries over unchanged.

# %%
import copy
import math
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

import diamond_lite
from diamond_lite import atari, data, edm, memory, sampler
from diamond_lite.unet import FourierFeatures, UNet, UNetConfig, num_groups
from diamond_lite.viz import LiveCurves, show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
GAME = diamond_lite.COURSE_GAME
torch.manual_seed(0)
print(f"profile: {P}   game: {GAME}   torch threads: {torch.get_num_threads()}")

# %% [markdown]
# ## 0. Frames to denoise
#
# A random policy, as in notebook 00, gives us a few thousand Breakout frames. A diffusion model works on floats:
# each uint8 pixel `u` becomes `u / 127.5 − 1`, in [−1, 1], channels first. We keep the last 10% of the frames
# aside to evaluate the denoiser on frames it never trained on.

# %%
DATA_DIR = Path("../runs/notebook01") / GAME
DATA_DIR.mkdir(parents=True, exist_ok=True)
for f in DATA_DIR.glob("*.npz"):
    f.unlink()  # start afresh each time the notebook runs
dataset = data.Dataset(DATA_DIR)
data.Collector(atari.make_env(GAME, split="train", seed=0), dataset, seed=0).collect(
    num_steps=P.pick(smoke=300, course=3_000, paper=10_000))

frames = torch.from_numpy(np.concatenate([e.obs for e in dataset])).permute(0, 3, 1, 2).float() / 127.5 - 1
num_eval = max(32, len(frames) // 10)
train_frames, eval_frames = frames[:-num_eval], frames[-num_eval:]
data_std = frames.std().item()
print(f"{len(frames)} frames {tuple(frames.shape[1:])}: {len(train_frames)} to train, {len(eval_frames)} held out")
print(f"pixel mean {frames.mean():.3f}, pixel std {data_std:.3f} (per channel: "
      f"{', '.join(f'{s:.3f}' for s in frames.std(dim=(0, 2, 3)).tolist())})")
assert frames.min() >= -1 and frames.max() <= 1
assert 0.25 < data_std < 0.75, "Breakout frames should have a spread near DIAMOND's sigma_data = 0.5"

# %% [markdown]
# The standard deviation of the pixels is what EDM calls **σ_data**. DIAMOND fixes `σ_data = 0.5` for every
# game; on Breakout the measured value is close to it. (The frames are mostly black, hence the negative mean, with
# bright bricks, walls and paddle.)
#
# ## 1. Forward noising
#
# Diffusion corrupts a clean frame `x0` with Gaussian noise of a chosen level `σ`:
#
# $$x_\text{noisy} = x_0 + \sigma\,\varepsilon,\qquad \varepsilon \sim \mathcal N(0, I).$$
#
# EDM works with `σ` directly (the "variance exploding" form, Karras Section 2), rather than with DDPM's time steps
# and scaled signal: there is no shrinking of `x0`, only noise added on top. Each pixel then has variance
# `σ_data² + σ²`: at `σ = σ_data` the frame is half signal, half noise, and by `σ = 5` it is gone.

# %%
SHOW_SIGMAS = [0.0, 0.02, 0.1, 0.3, 0.5, 1.0, 2.0, 5.0, 20.0]
x0 = eval_frames[len(eval_frames) // 2]
g = torch.Generator().manual_seed(1)
eps = torch.randn(x0.shape, generator=g)
show_frames([x0 + s * eps for s in SHOW_SIGMAS], [f"σ = {s:g}" for s in SHOW_SIGMAS], scale=1.4,
            suptitle="x_noisy = x0 + σ·ε for one Breakout frame (the same ε; values outside [−1, 1] shown clipped)")


# %% [markdown]
# The small details go first: by `σ = 0.3` the ball and the score digits are lost in the grain, while the bands of
# bricks survive to `σ ≈ 1`. A denoiser must therefore do very different jobs at different `σ`: at small `σ`, remove a faint
# grain and keep every detail; at large `σ`, invent a plausible frame from almost nothing.
#
# ## 2. The denoiser and its preconditioning
#
# A network `F` with weights θ could be trained to output the clean frame directly. Karras (eq. 7) instead wraps it:
#
# $$D(x_\text{noisy}, \sigma) = c_\text{skip}(\sigma)\, x_\text{noisy} + c_\text{out}(\sigma)\,
#   F\big(c_\text{in}(\sigma)\, x_\text{noisy},\; c_\text{noise}(\sigma)\big)$$
#
# and trains `D` with the denoising loss `E‖D(x0 + σε, σ) − x0‖²` (Karras eq. 2). Rewritten in terms of `F`
# (Karras eq. 8), this is an ordinary regression of `F` onto an **effective target**
#
# $$F_\text{target} = \frac{x_0 - c_\text{skip}\, x_\text{noisy}}{c_\text{out}},$$
#
# and the four coefficients are chosen (Karras Table 1, derived in Appendix B.6) so that the network's job is
# equally easy at every `σ`:
#
# | coefficient | EDM value | why |
# |---|---|---|
# | `c_in` | `1 / √(σ² + σ_data²)` | the input `x_noisy` has variance `σ² + σ_data²`: scale it to unit variance |
# | `c_skip` | `σ_data² / (σ² + σ_data²)` | mix of "keep the input" and "predict": chosen to make the target's variance smallest |
# | `c_out` | `σ·σ_data / √(σ² + σ_data²)` | then the target has unit variance |
# | `c_noise` | `ln(σ) / 4` | the noise level as the network's extra input, on a log scale of order 1 |
#
# The loss weight `λ(σ) = 1 / c_out²` makes the loss on `D` equal the plain MSE on `F`: every `σ` counts the same.
#
# **DIAMOND's twist, offset noise.** DIAMOND adds a second noise term (Section 4 below), so the noise per pixel has
# standard deviation `σ_eff = √(σ² + σ_offset²)`, and it computes all four coefficients, `c_noise` included, from
# `σ_eff` instead of `σ`. With `σ_offset = 0` this is plain EDM.
#
# ### Build it yourself
# Write the four coefficients for a tensor of noise levels, then check them against `diamond_lite.edm.precondition`.

# %% nbgrader={"grade": false, "grade_id": "precondition", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_precondition(sigma, sigma_data=0.5, sigma_offset_noise=0.0):
    """Karras Table 1 coefficients (c_in, c_out, c_skip, c_noise) at the effective level sqrt(sigma² + offset²)."""
    ### BEGIN SOLUTION
    sigma_eff = torch.sqrt(sigma**2 + sigma_offset_noise**2)
    total = sigma_eff**2 + sigma_data**2  # the variance of x_noisy
    c_in = 1 / torch.sqrt(total)
    c_skip = sigma_data**2 / total
    c_out = sigma_eff * sigma_data / torch.sqrt(total)
    c_noise = torch.log(sigma_eff) / 4
    return c_in, c_out, c_skip, c_noise
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "precondition_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
check_sigmas = torch.logspace(math.log10(2e-3), math.log10(80), 60)
for sigma_data in (0.5, 1.0):
    for offset in (0.0, 0.3):
        mine = my_precondition(check_sigmas, sigma_data, offset)
        ref = edm.precondition(check_sigmas, sigma_data=sigma_data, sigma_offset_noise=offset)
        for name, value in zip(("c_in", "c_out", "c_skip", "c_noise"), mine):
            torch.testing.assert_close(value, getattr(ref, name), msg=lambda m: f"{name} (σ_data={sigma_data}, offset={offset}): {m}")
print("my_precondition matches diamond_lite.edm.precondition, with and without offset noise")
### BEGIN HIDDEN TESTS
# properties that hold whatever the package says: D = c_skip·x + c_out·F has unit-variance input and target
c_in, c_out, c_skip, c_noise = my_precondition(torch.tensor([1e-4, 0.5, 50.0], dtype=torch.float64), 0.5)
assert abs(float(c_skip[0]) - 1) < 1e-6 and float(c_out[0]) < 1e-3, "at tiny σ the denoiser must pass x through"
assert abs(float(c_skip[1]) - 0.5) < 1e-9, "at σ = σ_data, c_skip = 1/2"
torch.testing.assert_close(c_in**2 * (c_in.new_tensor([1e-4, 0.5, 50.0]) ** 2 + 0.25), torch.ones(3, dtype=torch.float64))
torch.testing.assert_close(c_noise, torch.log(c_in.new_tensor([1e-4, 0.5, 50.0])) / 4)
### END HIDDEN TESTS

# %% [markdown]
# Here are the coefficients against `σ`, for plain EDM (solid) and with DIAMOND's offset noise (dashed).

# %%
sig = torch.logspace(-3, math.log10(20), 200)
plain = edm.precondition(sig, sigma_data=0.5)
offset = edm.precondition(sig, sigma_data=0.5, sigma_offset_noise=0.3)
fig, axes = plt.subplots(1, 4, figsize=(14, 2.9))
for ax, name in zip(axes, ("c_skip", "c_out", "c_in", "c_noise")):
    ax.plot(sig, getattr(plain, name), label="EDM")
    ax.plot(sig, getattr(offset, name), "--", label="with offset noise 0.3 (DIAMOND)")
    ax.axvline(0.5, color="grey", lw=0.8, ls=":")
    ax.set_xscale("log"); ax.set_xlabel("σ"); ax.set_title(name); ax.grid(alpha=0.3)
axes[1].plot(sig, sig, color="grey", lw=0.8, label="σ")
axes[1].set_yscale("log")
axes[0].legend(fontsize=7)
axes[1].legend(fontsize=7)
fig.suptitle("EDM preconditioning (Karras Table 1), σ_data = 0.5 (dotted line)", fontsize=10)
plt.tight_layout(); plt.show()

# %% [markdown]
# Read the curves from left to right:
#
# * at **small `σ`**, `c_skip ≈ 1` and `c_out ≈ σ`: `D` passes the input through, and `F` only supplies a
#   correction of the size of the noise (it predicts the noise, like DDPM's ε-prediction);
# * at **large `σ`**, `c_skip → 0` and `c_out → σ_data`: `D ≈ σ_data·F`, the network predicts the clean frame
#   itself, and a mistake can never cost more than `σ_data` per unit of error;
# * `c_in` shrinks as `1/σ` at large `σ` so that what the network sees always has unit variance;
# * with offset noise, nothing goes below `σ_eff = 0.3`: the curves flatten on the left.
#
# ## 3. Why precondition: the scale of the target, measured
#
# Karras Table 1 writes earlier diffusion models as special cases of eq. 7 with other coefficients. We compare EDM
# with the two obvious alternatives:
#
# * **ε-prediction**, as in DDPM (Ho et al. 2020; Table 1's "VP" column): `c_skip = 1`, `c_out = −σ`. The network
#   predicts the noise, and `D = x_noisy − σ·F`.
# * **x0-prediction**: `c_skip = 0`, `c_out = 1`. The network outputs the clean frame, `D = F`.
#
# Two numbers decide how hard each one is to train:
#
# 1. the **standard deviation of the target** `(x0 − c_skip·x_noisy) / c_out` that the raw network output must
#    match: a network is easiest to train when its inputs and targets have unit scale at every `σ`;
# 2. how much an **error `δ` in the network's output costs in the denoised frame**: `D` changes by `c_out·δ`.
#    Compare it with the noise `σ` that `D` is removing: an error bigger than the noise itself makes the step useless.
#
# We measure the first on real frames (`c_skip` and `c_out` of each parametrisation, the same formula for the
# target), together with the input's spread before and after `c_in`.

# %%
PARAMETRISATIONS = {  # (c_skip, c_out) as functions of sigma, Karras Table 1 style
    "ε-prediction": lambda s: (torch.ones_like(s), -s),
    "x0-prediction": lambda s: (torch.zeros_like(s), torch.ones_like(s)),
    "EDM": lambda s: (edm.precondition(s).c_skip, edm.precondition(s).c_out),
}
grid = torch.logspace(math.log10(2e-3), math.log10(20), 25)
x0 = train_frames[torch.randperm(len(train_frames), generator=torch.Generator().manual_seed(2))[: P.pick(smoke=64, course=512, paper=512)]]
# DIAMOND's noising (offset noise 0.3 and sigma_eff coefficients); the inner network plays no part here.
diamond_noise = edm.Denoiser(nn.Identity(), edm.DenoiserConfig())

target_std = {name: [] for name in [*PARAMETRISATIONS, "EDM + offset noise (DIAMOND)"]}
input_std, input_std_scaled = [], []
g = torch.Generator().manual_seed(3)
for s in grid:
    x_noisy = x0 + s * torch.randn(x0.shape, generator=g)
    for name, coeffs in PARAMETRISATIONS.items():
        c_skip, c_out = coeffs(s)
        target_std[name].append(((x0 - c_skip * x_noisy) / c_out).std().item())
    input_std.append(x_noisy.std().item())
    input_std_scaled.append((edm.precondition(s).c_in * x_noisy).std().item())
    x_off = diamond_noise.apply_noise(x0, s, generator=g)
    cs = edm.precondition(s, sigma_offset_noise=0.3)
    target_std["EDM + offset noise (DIAMOND)"].append(((x0 - cs.c_skip * x_off) / cs.c_out).std().item())

# How much an error delta in F moves D (|c_out|), absolute and relative to the noise sigma being removed.
amplification = {name: coeffs(grid)[1].abs() for name, coeffs in PARAMETRISATIONS.items()}

fig, axes = plt.subplots(1, 4, figsize=(16, 3.2))
axes[0].plot(grid, input_std, label="x_noisy")
axes[0].plot(grid, input_std_scaled, label="c_in · x_noisy (EDM)")
axes[0].set_yscale("log"); axes[0].set_title("network input: std (measured)")
for name, values in target_std.items():
    axes[1].plot(grid, values, "--" if "offset" in name else "-", label=name)
axes[1].set_ylim(0, 1.6); axes[1].set_title("network target: std (measured)")
for name, amp in amplification.items():
    axes[2].plot(grid, amp, label=name)
    axes[3].plot(grid, amp / grid, label=name)
axes[2].set_yscale("log"); axes[2].set_title("error in D per unit error of F: |c_out|")
axes[3].set_yscale("log"); axes[3].set_title("the same, relative to σ: |c_out| / σ")
axes[3].axhline(1, color="grey", lw=0.8, ls=":")
for ax in axes:
    ax.set_xscale("log"); ax.set_xlabel("σ"); ax.grid(alpha=0.3); ax.legend(fontsize=7)
plt.tight_layout(); plt.show()

for name, values in target_std.items():
    print(f"{name:>29}: target std from {min(values):.3f} to {max(values):.3f}")
print(f"input std from {min(input_std):.2f} to {max(input_std):.1f} (x{max(input_std) / min(input_std):.0f}); "
      f"after c_in from {min(input_std_scaled):.2f} to {max(input_std_scaled):.2f}")
print(f"error amplification at σ = {grid[-1]:.0f}: ε-prediction {amplification['ε-prediction'][-1]:.1f}, "
      f"EDM {amplification['EDM'][-1]:.2f}")
print(f"error relative to σ at σ = {grid[0]:.3f}: x0-prediction {amplification['x0-prediction'][0] / grid[0]:.0f}, "
      f"EDM {amplification['EDM'][0] / grid[0]:.2f}")

# %%
for name in ("EDM", "EDM + offset noise (DIAMOND)"):
    assert all(0.5 < v < 2 for v in target_std[name]), f"{name}: the target should have unit scale at every σ"
assert all(0.5 < v < 2 for v in input_std_scaled), "c_in should bring the input to unit scale"
assert input_std[-1] / input_std[0] > 10, "without c_in the input's scale grows with σ"
assert amplification["ε-prediction"][-1] > 10 * amplification["EDM"][-1], "ε-prediction amplifies errors at high σ"
assert amplification["x0-prediction"][0] / grid[0] > 10 * amplification["EDM"][0] / grid[0], "x0-prediction is too coarse at low σ"
assert (amplification["EDM"] <= torch.minimum(grid, torch.tensor(0.5)) + 1e-6).all(), "EDM's c_out ≤ min(σ, σ_data)"

# %% [markdown]
# What the numbers show:
#
# * **Input.** Without `c_in`, the input's spread grows 40-fold across the range of `σ` (from the data's 0.48 to
#   20); with it, it stays at 1 and the network sees inputs of the same scale at every noise level.
# * **Target.** All three targets are of order one on Breakout: ε is unit Gaussian by construction, x0 has the
#   data's spread (about 0.5), and EDM's target is the only one that is ≈ 1 *by design*: had `σ_data` been
#   wrong, or the data been different, ε and x0 would stay put, but EDM's target would tell (it drifts to
#   `std(x0)/σ_data` at high `σ`). Offset noise keeps it at unit scale too.
# * **The errors are what separates them.** With ε-prediction, `D = x_noisy − σ·F`: at `σ = 20` any error in the
#   predicted noise is multiplied by 20 in the frame. This is why DDPM-style models need many small steps near the
#   start of sampling. With x0-prediction the error passes 1:1, but at `σ = 0.002` the network would have to
#   reproduce every pixel of its input to a precision 500 times finer than its own output error (rightmost panel): an
#   identity map made by a network, far harder than predicting a small correction. EDM's `c_out ≤ min(σ, σ_data)`
#   avoids both: an error never costs more than the noise being removed, nor more than the data's own scale.
#
# DIAMOND (Section 3) chose EDM over DDPM for this reason: its world model must produce good frames in very few
# denoising steps (3), where DDPM's errors at high noise compound. Notebook 04 measures that difference directly.
#
# ## 4. Offset noise and the effective σ
#
# Gaussian noise drawn independently per pixel barely changes a frame's **average colour**: the mean of 64×64 = 4096
# independent draws has standard deviation `σ / 64`. A model trained only on such noise almost never sees the
# overall brightness of a channel disturbed, so it never learns to correct it, and its samples keep whatever mean
# the initial noise happened to have (Guttenberg, *Diffusion with offset noise*, 2023). DIAMOND therefore adds,
# during training, a second noise term with **one value per image and per channel**:
#
# $$x_\text{noisy} = x_0 + \sigma_\text{offset}\,\varepsilon_\text{offset} + \sigma\,\varepsilon,\qquad
#   \varepsilon_\text{offset} \in \mathbb R^{B\times C\times 1\times 1},\ \sigma_\text{offset} = 0.3.$$
#
# Per pixel the total noise has variance `σ² + 0.3²`, so the coefficients use `σ_eff = √(σ² + 0.3²)`, which never
# falls below 0.3. `Denoiser.apply_noise` does this noising; we measure how much each kind of noise moves the
# channel means.

# %%
g = torch.Generator().manual_seed(4)
probe = x0[:64]
rows = []
for s in (0.01, 0.1, 1.0):
    plain_shift = (probe + s * torch.randn(probe.shape, generator=g)).mean(dim=(2, 3)) - probe.mean(dim=(2, 3))
    offset_shift = diamond_noise.apply_noise(probe, s, generator=g).mean(dim=(2, 3)) - probe.mean(dim=(2, 3))
    rows.append((s, plain_shift.std().item(), offset_shift.std().item(), math.sqrt(s**2 + 0.3**2)))
print(" σ      std of the channel-mean shift: plain noise | with offset noise    σ_eff")
for s, a, b, e in rows:
    print(f"{s:<6g} {a:>38.4f} | {b:.4f} {e:>16.3f}")
assert all(b > 5 * a for _, a, b, _ in rows[:2]), "offset noise should dominate the channel-mean shift at small σ"

show_frames([diamond_noise.apply_noise(x0[:1], 0.05, generator=torch.Generator().manual_seed(k))[0] for k in range(6)],
            [f"draw {k}" for k in range(6)], scale=1.4,
            suptitle="DIAMOND's training noise at σ = 0.05: the offset term tints the whole frame, a different colour each draw")

# %% [markdown]
# Two consequences worth remembering:
#
# * the model is **never trained at an effective noise level below 0.3**, even when the sampled `σ` is 0.002; it
#   must always remove a colour cast, which is a real task even at the end of sampling;
# * at sampling time DIAMOND adds no offset noise, yet still evaluates `D` with the `σ_eff` coefficients, and so do
#   we (`Denoiser.denoise`).
#
# ## 5. Which σ to train on: the log-normal distribution
#
# Each training example gets its own `σ`, drawn as `ln σ ~ N(P_mean, P_std²)` (Karras Section 5, Table 1). Karras
# observed (their Fig. 5a) that the loss can only be reduced at intermediate noise levels: at very small `σ` the
# noise is too faint to matter, and at very large `σ` the best answer is the dataset's average whatever the network
# does. So training time goes where it helps. DIAMOND uses `P_mean = −0.4`, `P_std = 1.2` (Karras had −1.2 for
# ImageNet-sized images), and clips to `[0.002, 20]` after the exponential, so the clipped tails pile up at the
# two bounds.

# %%
ts = edm.TrainingSigmaConfig()
draws = edm.sample_training_sigma(200_000, generator=torch.Generator().manual_seed(5))
bins = np.logspace(math.log10(ts.sigma_min), math.log10(ts.sigma_max), 61)
plt.figure(figsize=(7, 3))
plt.hist(draws.numpy(), bins=bins, density=False, weights=np.full(len(draws), 1 / len(draws)), alpha=0.6, label="drawn")
centers = np.sqrt(bins[1:] * bins[:-1])
pdf_log = np.exp(-0.5 * ((np.log(centers) - ts.loc) / ts.scale) ** 2) / (ts.scale * math.sqrt(2 * math.pi))
plt.plot(centers, pdf_log * np.diff(np.log(bins)), "k", lw=1, label=f"ln σ ~ N({ts.loc}, {ts.scale}²)")
plt.axvline(0.5, ls=":", color="C2", label="σ_data = 0.5")
plt.axvline(math.exp(ts.loc), ls=":", color="C3", label="median e^−0.4 ≈ 0.67")
plt.xscale("log"); plt.xlabel("σ (log scale)"); plt.ylabel("fraction of draws per bin")
plt.title("training noise levels (DIAMOND: P_mean = −0.4, P_std = 1.2, clipped to [0.002, 20])")
plt.legend(fontsize=8); plt.tight_layout(); plt.show()

at_max = (draws == ts.sigma_max).float().mean().item()
expected_at_max = 0.5 * math.erfc((math.log(ts.sigma_max) - ts.loc) / (ts.scale * math.sqrt(2)))
print(f"median {draws.median():.3f} (e^-0.4 = {math.exp(ts.loc):.3f}); within [0.1, 5]: {((draws > 0.1) & (draws < 5)).float().mean():.1%}")
print(f"clipped to σ_max = 20: {at_max:.3%} of draws (log-normal tail: {expected_at_max:.3%})")
assert abs(draws.median().item() / math.exp(ts.loc) - 1) < 0.02
assert abs(at_max - expected_at_max) < 0.001


# %% [markdown]
# ## 6. Training a small denoiser on Breakout frames
#
# Now a real network. Ours is **unconditional**: it models single frames, `p(frame)`, not the next frame given the
# past (that is notebook 02). The inner network `F(x_in, c_noise)` is a small version of DIAMOND's:
#
# * `c_noise` goes through random Fourier features and a small MLP into a conditioning vector;
# * a 3×3 convolution lifts the 3 colour channels to 16 feature maps; a small U-Net (`diamond_lite.unet`, built
#   block by block in notebook 02) processes them at 64, 32, 16 and 8 pixels, its adaptive group norms steered by
#   the conditioning vector; a 3×3 convolution returns 3 channels;
# * the output convolution starts at **zero**, so the untrained denoiser is `D = c_skip · x_noisy` and its loss is
#   the variance of the target, which we measured to be ≈ 1 at every `σ`.
#
# `edm.Denoiser` adds the preconditioning around it and provides the loss: draw `σ` from the log-normal, noise the
# frames (with offset noise), and take the MSE between `F` and its effective target.

# %%
class TinyDenoiserNet(nn.Module):
    """F(x_in, c_noise) for single frames: Fourier features of c_noise steer a small U-Net."""

    def __init__(self, channels=(16, 32, 32, 32), cond_channels=32):
        super().__init__()
        self.noise_emb = FourierFeatures(cond_channels)
        self.cond_proj = nn.Sequential(nn.Linear(cond_channels, cond_channels), nn.SiLU(), nn.Linear(cond_channels, cond_channels))
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        self.unet = UNet(UNetConfig(cond_channels=cond_channels, depths=[1] * len(channels), channels=list(channels),
                                    attn_depths=[False] * len(channels)))
        self.norm_out = nn.GroupNorm(num_groups(channels[0]), channels[0])
        self.conv_out = nn.Conv2d(channels[0], 3, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)  # start as D = c_skip * x_noisy
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x_in, c_noise):
        cond = self.cond_proj(self.noise_emb(c_noise))
        return self.conv_out(F.silu(self.norm_out(self.unet(self.conv_in(x_in), cond))))


torch.manual_seed(0)
denoiser = edm.Denoiser(TinyDenoiserNet(), edm.DenoiserConfig())  # DIAMOND's σ_data 0.5, offset 0.3, log-normal σ
untrained = copy.deepcopy(denoiser)  # kept to compare the loss before and after training
print(f"{sum(p.numel() for p in denoiser.parameters()):,} parameters; config: {denoiser.cfg}")

# %% [markdown]
# Training is plain: a batch of random frames, one call to `denoiser.loss`, one AdamW step. DIAMOND trains with
# learning rate 1e-4 over hundreds of thousands of steps; for a few minutes on a CPU we use a larger one, keep
# DIAMOND's weight decay (0.01) and gradient clipping (norm 1), and warm the learning rate up linearly.

# %%
num_steps = P.pick(smoke=20, course=1_000, paper=20_000)
batch_size = P.pick(smoke=8, course=16, paper=32)
lr = P.pick(smoke=1e-3, course=1e-3, paper=3e-4)
optimizer = torch.optim.AdamW(denoiser.parameters(), lr=lr, weight_decay=1e-2)
warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / 50))
curves = LiveCurves(["EDM loss"], every=P.pick(smoke=10, course=50, paper=200), smooth=25,
                    title="training the unconditional denoiser")
g = torch.Generator().manual_seed(6)
denoiser.train()
started = time.perf_counter()
for step in tqdm(range(num_steps), desc="train denoiser"):
    batch = train_frames[torch.randint(len(train_frames), (batch_size,), generator=g)]
    loss = denoiser.loss(batch, generator=g)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(denoiser.parameters(), 1.0)
    optimizer.step()
    warmup.step()
    curves.add(step, **{"EDM loss": loss.item()})
curves.draw()
denoiser.eval()
seconds = time.perf_counter() - started
plt.figure(figsize=(5, 2.6))
smoothed = np.convolve(curves.values["EDM loss"], np.ones(10) / 10, mode="valid")
plt.semilogy(np.arange(len(smoothed)) + 9, smoothed)
plt.xlabel("step"); plt.ylabel("EDM loss (log scale)"); plt.title("the same curve, log scale (mean of 10 steps)", fontsize=10)
plt.grid(alpha=0.3); plt.tight_layout(); plt.show()
print(f"{num_steps} steps of batch {batch_size} in {seconds:.0f} s ({seconds / num_steps:.2f} s/step); "
      f"first 10 steps' mean loss {np.mean(curves.values['EDM loss'][:10]):.3f}, "
      f"last 50 steps' {np.mean(curves.values['EDM loss'][-50:]):.3f}")


# %% [markdown]
# A network whose output starts at zero has, as its first loss, the **mean square** of the target: its variance
# (≈ 1, measured above) *plus its squared mean*. EDM's derivation assumes zero-mean data, but Breakout frames are
# mostly black (pixel mean −0.68), so at large `σ`, where the target is `≈ x0 / σ_data`, the mean square is
# `(0.68² + 0.48²) / 0.5² ≈ 2.8`. A constant offset is the first thing a network learns, which is why the curve
# drops so fast at the start.
#
# ### The loss per noise level
#
# A single training loss averages over very different tasks. We evaluate it instead at fixed `σ` values across
# the range, on the held-out frames, for the untrained and the trained denoiser.

# %%
@torch.no_grad()
def loss_per_sigma(model, sigmas, frames, num_batches, batch_size=32, seed=7):
    """Mean EDM loss (on F) at each fixed sigma, over the same noise draws for every model."""
    out = []
    for s in tqdm(sigmas.tolist(), desc="loss per σ", leave=False):
        g = torch.Generator().manual_seed(seed)
        losses = []
        for _ in range(num_batches):
            batch = frames[torch.randint(len(frames), (batch_size,), generator=g)]
            losses.append(model.loss(batch, sigma=s, generator=g).item())
        out.append(np.mean(losses))
    return np.array(out)


eval_sigmas = torch.logspace(math.log10(2e-3), math.log10(20), 13)
num_batches = P.pick(smoke=1, course=4, paper=8)
loss_before = loss_per_sigma(untrained, eval_sigmas, eval_frames, num_batches)
loss_after = loss_per_sigma(denoiser, eval_sigmas, eval_frames, num_batches)

# The loss is on F; the error of D in pixels is c_out² times it (with DIAMOND's sigma_eff coefficients).
c_out_sq = edm.precondition(eval_sigmas, sigma_offset_noise=denoiser.cfg.sigma_offset_noise).c_out.numpy() ** 2
fig, axes = plt.subplots(1, 2, figsize=(12, 3.2))
for ax, scale, ylabel in ((axes[0], 1.0, "EDM loss (MSE of F, log scale)"), (axes[1], c_out_sq, "MSE of D in pixels = c_out² · loss")):
    ax.plot(eval_sigmas, loss_before * scale, "o-", label="untrained (D = c_skip · x_noisy)")
    ax.plot(eval_sigmas, loss_after * scale, "o-", label=f"trained ({num_steps} steps)")
    ax.set_xscale("log"); ax.set_yscale("log"); ax.set_xlabel("σ"); ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(alpha=0.3); ax.legend(fontsize=8, loc="upper left")
    density = ax.twinx()
    density.hist(draws.numpy(), bins=bins, color="grey", alpha=0.2)
    density.set_yticks([]); density.set_ylabel("training σ density (grey)", fontsize=8)
    ax.set_zorder(density.get_zorder() + 1); ax.patch.set_visible(False)  # curves in front of the histogram
axes[0].set_title("held-out loss at fixed σ (what training minimises)", fontsize=10)
axes[1].set_title("the same, as the error of the denoised frame", fontsize=10)
plt.tight_layout(); plt.show()
for s, b, a, c in zip(eval_sigmas.tolist(), loss_before, loss_after, c_out_sq):
    print(f"σ = {s:7.3f}: loss {b:.3f} → {a:.4f} ({b / a:5.1f}x lower); pixel MSE of D {a * c:.5f}")

mid = int(np.argmin(np.abs(eval_sigmas.numpy() - 0.5)))
assert np.isfinite(loss_after).all()
assert loss_after[mid] < loss_before[mid], "training should lower the loss at mid σ"
if not P.is_smoke:
    assert loss_after[mid] < 0.5 * loss_before[mid], "a few minutes of training should halve the loss at σ ≈ 0.5"

# %% [markdown]
# Three things to read in these curves:
#
# * **Training helps at every `σ`**, including the rarely drawn ends of the range: the same network serves all noise
#   levels, and what it learns at one carries to its neighbours.
# * **The loss on `F` has the same scale at every `σ`**, as EDM intends (left): no noise level dominates the
#   gradient. How much of it is left depends on the data. On ImageNet, Karras (Fig. 5a) find that training
#   lowers it only at intermediate `σ`; random-policy Breakout is far less varied: walls, bricks and score look
#   the same in most frames, so even at `σ = 20` the best guess, the average frame, is almost right. What remains
#   is the ball, the paddle and the missing bricks.
# * **In pixels (right), the denoised frame's error grows with `σ`**, as `c_out²`: at small `σ` the input already
#   holds the answer; at large `σ` the network must guess it. Offset noise sets a floor: even at `σ = 0.002` the
#   model removes a colour cast of std 0.3, so its error never drops to zero.
#
# ### What the denoiser predicts at high and at low noise
#
# The same held-out frame, noised at increasing `σ` (no offset noise, as at sampling time), and `D`'s answer.

# %%
x_real = eval_frames[len(eval_frames) // 3]
sigmas_show = [0.05, 0.2, 0.5, 1.0, 2.0, 5.0]
g = torch.Generator().manual_seed(8)
noisy = torch.stack([x_real + s * torch.randn(x_real.shape, generator=g) for s in sigmas_show])
with torch.no_grad():
    denoised = denoiser(noisy, torch.tensor(sigmas_show))
error_maps = (denoised - x_real).abs().mean(dim=1, keepdim=True) * 2 - 1  # grey levels: black = exact
show_frames([*noisy, *denoised, *error_maps], columns=len(sigmas_show), scale=1.5,
            titles=[f"σ = {s:g}" for s in sigmas_show] + [""] * 2 * len(sigmas_show),
            row_labels=["x_noisy", "D(x_noisy, σ)", "|D − x0| (bright = wrong)"],
            suptitle="the trained denoiser on a held-out frame")
errors = (denoised - x_real).pow(2).mean(dim=(1, 2, 3))
print("MSE of D against the clean frame:", ", ".join(f"σ={s:g}: {e:.4f}" for s, e in zip(sigmas_show, errors.tolist())))

# %% [markdown]
# At low noise `D` returns the frame with the grain removed. As `σ` grows it keeps what is common to all Breakout
# frames (walls, bricks, colour bands) and loses what varies: the error row lights up on the ball, the paddle and the
# score digits. The MSE-optimal answer at high noise is the *average* of all the frames that could have produced
# this input; random-policy Breakout frames differ only in those few pixels, so the average looks like a clean frame
# with the moving objects smeared or missing. This is why one call to `D` is not enough to draw a frame, and
# sampling takes several, each at a lower noise level where the details can be committed to.
#
# ## 7. Drawing frames: Karras schedule, Euler steps, 8-bit frames
#
# Karras (eq. 1 and 3) shows that a denoiser defines an ordinary differential equation that carries noise onto
# data:
#
# $$\frac{dx}{d\sigma} = \frac{x - D(x, \sigma)}{\sigma}.$$
#
# Start from `x ~ N(0, σ_max² I)` and integrate down to `σ = 0`. The **Euler** method takes steps
# `x ← x + (σ_next − σ)·(x − D(x, σ))/σ`; the last one, to `σ = 0`, lands exactly on `D(x, σ)`. The levels come
# from Karras eq. 5, which spaces `σ^(1/ρ)` evenly with `ρ = 7`, so most steps fall at small `σ`, where the
# details are made. DIAMOND's world model uses **3 Euler steps** from `σ_max = 5` to `σ_min = 0.002`
# (`sampler.karras_sigmas`, `sampler.sample`).

# %%
fig, ax = plt.subplots(figsize=(6, 2.8))
for n in (3, 10, 30):
    levels = sampler.karras_sigmas(n)[:-1]
    ax.plot(np.arange(n) / max(1, n - 1), levels, "o-", ms=3, label=f"{n} steps ({sampler.count_evaluations(n, 1)} calls to D)")
ax.plot(np.linspace(0, 1, 10), sampler.karras_sigmas(10, rho=1)[:-1], "x:", color="grey", label="10 steps, ρ = 1 (even in σ)")
ax.set_yscale("log"); ax.set_xlabel("step i / (N − 1)"); ax.set_ylabel("σ_i")
ax.set_title("Karras eq. 5 schedule (σ from 5 to 0.002, then a last step to 0)", fontsize=10)
ax.grid(alpha=0.3); ax.legend(fontsize=8); plt.tight_layout(); plt.show()

# %% [markdown]
# **8-bit quantisation.** Real frames take only 256 values per channel. DIAMOND snaps every denoised estimate `D` to
# that grid during sampling (`edm.quantize_8bit`, used by `Denoiser.denoise`), so that imagined frames are exactly
# representable as uint8 images, like the real ones the agent sees. It truncates, as a cast to `uint8` does: a value
# is moved *down* to the level below it, never by more than one level (2/255).

# %%
ramp = torch.linspace(-0.03, 0.03, 400)
plt.figure(figsize=(5, 2.6))
plt.plot(ramp, ramp, lw=0.8, label="x")
plt.step(ramp, edm.quantize_8bit(ramp), where="post", label="quantize_8bit(x)")
plt.xlabel("x"); plt.ylabel("value"); plt.title("8-bit quantisation, zoomed: truncation to the level below")
plt.legend(fontsize=8); plt.grid(alpha=0.3); plt.tight_layout(); plt.show()
gap = (ramp - edm.quantize_8bit(ramp))
assert (gap >= -1e-6).all() and (gap <= 2 / 255 + 1e-6).all()

# %% [markdown]
# Now the samples. The same 8 starting noises for every row; each row integrates with a different number of Euler
# steps.

# %%
step_counts = P.pick(smoke=[1, 3], course=[1, 3, 10, 30], paper=[1, 3, 10, 30, 100])
num_samples = 8
start_noise = sampler.initial_noise((num_samples, 3, 64, 64), sigma_max=5.0, generator=torch.Generator().manual_seed(9))
samples = {}
for n in tqdm(step_counts, desc="sampling"):
    samples[n] = sampler.sample(denoiser.denoise, start_noise, sampler.karras_sigmas(n, sigma_min=2e-3, sigma_max=5.0))
real_row = eval_frames[torch.randperm(len(eval_frames), generator=torch.Generator().manual_seed(10))[:num_samples]]
show_frames([f for n in step_counts for f in samples[n]] + list(real_row), columns=num_samples, scale=1.2,
            row_labels=[f"{n} Euler step{'s' * (n > 1)}" for n in step_counts] + ["real frames"],
            suptitle="unconditional samples from the small denoiser (same starting noise per column)")

for n, x in samples.items():
    levels = (x + 1) / 2 * 255
    assert torch.isfinite(x).all() and x.min() >= -1 and x.max() <= 1
    assert (levels - levels.round()).abs().max() < 1e-3, "the final sample should lie on the 8-bit grid"
    print(f"{n:>3} steps: pixel mean {x.mean():+.3f}, std {x.std():.3f}, "
          f"MSE to the mean real frame {(x - eval_frames.mean(0)).pow(2).mean():.4f}")
print(f"real   : pixel mean {real_row.mean():+.3f}, std {real_row.std():.3f}, "
      f"MSE to the mean real frame {(real_row - eval_frames.mean(0)).pow(2).mean():.4f}")

# %% [markdown]
# With `ρ = 7` the same curve is walked at every `N`, its steps dense at small `σ`; evenly spaced levels (`ρ = 1`)
# would spend most of the steps at large `σ`, where little detail is made.
#
# One step (`x ← D(x, σ_max)`) returns the denoiser's best guess from pure noise: the average Breakout frame, with
# the static walls, bricks and score area right and the moving parts averaged away. More steps let each later call
# to `D` see a less noisy input and commit to specifics: a paddle, a gap in the wall. Still, a small network trained
# for minutes rarely draws the ball, and may draw a paddle twice or nowhere (an unconditional model has nothing to
# tell it *where* they should be): these few-pixel objects are exactly the *visual details* of DIAMOND's title.
# DIAMOND's world model gets away with 3 steps because its task is much easier: it is shown the 4 previous frames,
# and most of the next frame is a copy of them.
#
# **Next:** notebook 02 builds DIAMOND's world model, the same EDM denoiser with a full U-Net that also receives the
# last 4 frames (stacked on the channel axis) and the last 4 actions, and trains it to predict the next frame.
