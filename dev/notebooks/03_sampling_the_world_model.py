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
# # 03 · Sampling the world model: steps, solvers, and a dream
#
# A diffusion model does not output a frame; it outputs a *denoiser*, and a frame comes from running an ODE solver
# from noise down to σ = 0 with it. How many steps, and which solver, decide both the cost of every imagined frame and
# its quality. DIAMOND samples its world model with **3 Euler steps** — a tiny budget by image-generation standards
# (Karras et al. use 35 to 79 evaluations) — and this notebook looks at why that is enough for an Atari world model,
# then lets the model **dream**: hundreds of frames, each predicted from its own earlier predictions.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from tqdm.auto import tqdm

import diamond_lite
from diamond_lite import atari, data, memory, sampler, world_model
from diamond_lite.pretrain import checkpoint_path, load_or_train
from diamond_lite.viz import animate, show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
GAME = diamond_lite.COURSE_GAME
torch.manual_seed(0)
print(f"profile: {P}   game: {GAME}")

# %% [markdown]
# ## 1. A trained world model and held-out episodes
# We load the model that `make pretrain` trained (2,500 updates, about an hour on one core of a laptop CPU, in the course profile). Without it, a
# short training run stands in: enough to run the notebook, not to dream well.

# %%
env = atari.make_env(GAME)
cfg = world_model.world_model_config(P.name, env.action_space.n)
train_data = data.Dataset(Path("../runs/notebook03") / GAME / "train")
if not checkpoint_path(GAME, P.name).exists() and train_data.num_steps == 0:
    data.Collector(atari.make_env(GAME, seed=0), train_data, seed=0).collect(num_steps=P.pick(smoke=300, course=3000, paper=3000))
model = load_or_train("world_model", GAME, P.name, cfg, train_data, updates=P.pick(smoke=5, course=200, paper=200))

test_dir = Path("../runs/notebook03") / GAME / "test"
for f in test_dir.glob("*.npz"):
    f.unlink()
test_data = data.Dataset(test_dir)
data.Collector(atari.make_env(GAME, split="test", seed=1), test_data, seed=1).collect(num_episodes=P.pick(smoke=1, course=3, paper=5))
print(f"{len(test_data)} held-out test episodes, lengths {test_data.lengths.tolist()}")


# %% [markdown]
# ## 2. The Karras schedule
# With N steps the sampler visits N noise levels from σ_max = 5 down to σ_min = 0.002, spaced evenly in σ^(1/ρ) with
# ρ = 7 (Karras et al. eq. 5), then jumps to 0. Most levels sit at small σ, where the fine detail is decided. With a
# single step the schedule is just [σ_max, 0]: one call to the denoiser from pure noise.
#
# ### Build it yourself
# Write the schedule of Karras eq. 5: `σ_i = (σ_max^(1/ρ) + i/(N−1)·(σ_min^(1/ρ) − σ_max^(1/ρ)))^ρ` for
# `i = 0 … N−1`, then a final 0, as a float32 tensor of N + 1 values. For N = 1, take `[σ_max, 0]` (DIAMOND does).

# %% nbgrader={"grade": false, "grade_id": "karras_schedule", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_karras_sigmas(num_steps, sigma_min=2e-3, sigma_max=5.0, rho=7):
    ### BEGIN SOLUTION
    ramp = torch.linspace(0, 1, num_steps, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (hi + ramp * (lo - hi)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)]).float()
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "karras_schedule_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
for n in range(1, 11):
    torch.testing.assert_close(my_karras_sigmas(n), sampler.karras_sigmas(n))
print("my_karras_sigmas matches diamond_lite.sampler.karras_sigmas for 1 to 10 steps")
### BEGIN HIDDEN TESTS
for n, lo, hi, rho in [(4, 0.01, 80.0, 7), (6, 2e-3, 5.0, 1), (3, 0.1, 1.0, 3)]:
    got = my_karras_sigmas(n, lo, hi, rho)
    assert got.dtype == torch.float32 and len(got) == n + 1 and float(got[-1]) == 0
    torch.testing.assert_close(got, sampler.karras_sigmas(n, lo, hi, rho))
    assert bool((got[:-1].diff() < 0).all()), "the levels must decrease"
### END HIDDEN TESTS

# %%
plt.figure(figsize=(6, 2.8))
for n in [1, 2, 3, 5, 10]:
    s = sampler.karras_sigmas(n)
    plt.plot(range(n + 1), s.clamp_min(1e-3), "o-", label=f"{n} steps")
plt.yscale("log"); plt.xlabel("step i"); plt.ylabel("σ_i  (0 drawn at 1e-3)"); plt.legend(fontsize=8)
plt.title("Karras schedules (σ_max = 5, σ_min = 0.002, ρ = 7)"); plt.tight_layout(); plt.show()
print("3 steps:", [round(float(x), 4) for x in sampler.karras_sigmas(3)])


# %% [markdown]
# ## 3. Euler, Heun and churn on real predictions
# From the same held-out contexts we predict the next frame with several samplers and measure the error against the
# real frame, and the cost in **network function evaluations** (NFE): Euler calls the denoiser once per step, Heun
# twice (except on the last step to σ = 0), and *churn* (Karras Algorithm 2) re-injects a little noise before each
# step. We score only frames where something moved.
#
# ### An Euler step — build it yourself
# The probability-flow ODE is `dx/dσ = (x − D(x, σ))/σ`. One Euler step from `σ` to `σ_next` follows that slope in
# a straight line. Write it for any `denoise(x, sigma)` (which takes a `(B,)` tensor of levels), then chain your steps
# along a schedule and compare with the package's sampler. (The step to σ = 0 lands exactly on `D(x, σ)`: check it.)

# %% nbgrader={"grade": false, "grade_id": "euler_step", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_euler_step(denoise, x, sigma, sigma_next):
    ### BEGIN SOLUTION
    denoised = denoise(x, torch.full((x.shape[0],), sigma))
    slope = (x - denoised) / sigma
    return x + slope * (sigma_next - sigma)
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "euler_step_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
def gaussian_denoiser(sigma_data=0.5):
    """The exact D for data ~ N(0, σ_data²): a known answer to test samplers with."""
    return lambda x, sigma: x * sigma_data**2 / (sigma[:, None, None, None] ** 2 + sigma_data**2)

x0 = sampler.initial_noise((4, 3, 8, 8), 5.0, generator=torch.Generator().manual_seed(0))
for n in (1, 3, 10):
    levels = sampler.karras_sigmas(n).tolist()
    x = x0
    for s_now, s_next in zip(levels[:-1], levels[1:]):
        x = my_euler_step(gaussian_denoiser(), x, s_now, s_next)
    torch.testing.assert_close(x, sampler.sample(gaussian_denoiser(), x0, sampler.karras_sigmas(n), order=1), atol=1e-5, rtol=1e-4)
print("chained Euler steps match diamond_lite.sampler.sample(order=1)")
### BEGIN HIDDEN TESTS
zero = lambda x, sigma: torch.zeros_like(x)  # D = 0: the step only rescales x by σ_next / σ
torch.testing.assert_close(my_euler_step(zero, x0, 2.0, 0.5), x0 * 0.25)
torch.testing.assert_close(my_euler_step(gaussian_denoiser(), x0, 1.5, 0.0), gaussian_denoiser()(x0, torch.full((4,), 1.5)))
### END HIDDEN TESTS

# %%
def held_out_batch(n, seed):
    segs = data.SegmentSampler(test_data, 5, 4 * n, sample_weights=None, seed=seed).sample().to_torch()
    keep = segs["mask"].all(1) & ((segs["obs"][:, 4] - segs["obs"][:, 3]).abs().flatten(1).amax(1) > 0)
    return {k: v[keep][:n] for k, v in segs.items()}


eval_batch = held_out_batch(P.pick(smoke=4, course=64, paper=256), seed=0)
context, actions, truth = eval_batch["obs"][:, :4], eval_batch["act"][:, :4], eval_batch["obs"][:, 4]
copy_mse = (context[:, -1] - truth).pow(2).mean().item()
configs = [("Euler", dict(order=1), n) for n in (1, 2, 3, 5, 10)] + [("Heun", dict(order=2), n) for n in (2, 3, 5)] + [
    ("Euler + churn", dict(order=1, s_churn=1.0), n) for n in (3, 10)]
rows = []
for name, options, n in tqdm(configs, desc="samplers"):
    cfg_s = sampler.SamplerConfig(num_steps=n, **options)
    started = time.perf_counter()
    pred = model.predict_next(context, actions, sampler=cfg_s, generator=torch.Generator().manual_seed(0))
    seconds = time.perf_counter() - started
    rows.append((name, n, sampler.count_evaluations(n, cfg_s.order), (pred - truth).pow(2).mean().item(), len(truth) / seconds))
print(f"{'sampler':<15}{'steps':>6}{'NFE':>5}{'MSE':>10}{'frames/s':>10}")
for name, n, nfe, mse, fps in rows:
    print(f"{name:<15}{n:>6}{nfe:>5}{mse:>10.5f}{fps:>10.1f}")
print(f"{'copy last':<15}{'':>6}{0:>5}{copy_mse:>10.5f}")

# %%
plt.figure(figsize=(5.5, 3))
for name in ["Euler", "Heun", "Euler + churn"]:
    pts = [(nfe, mse) for (nm, n, nfe, mse, fps) in rows if nm == name]
    plt.plot(*zip(*pts), "o-", label=name)
plt.axhline(copy_mse, color="gray", ls="--", label="copy last frame")
plt.xscale("log"); plt.xlabel("network evaluations per frame"); plt.ylabel("MSE vs real next frame")
plt.legend(fontsize=8); plt.title("quality vs cost of the sampler"); plt.tight_layout(); plt.show()

# %% [markdown]
# What to read from it: the first step does most of the work. A world model conditions on four real frames, so the
# next frame is nearly determined; what is left uncertain (where exactly the ball is) is small. EDM's preconditioning
# makes the one-step estimate `D(x, σ_max)` a sensible frame rather than a blur of noise, and one or two more Euler
# steps sharpen the few pixels that are uncertain. Past a few steps the error stops falling: what remains is the
# model's error, not the solver's. That is why DIAMOND stops at 3 Euler steps.
#
# **Heun at 2 or 3 steps is a disaster**, and it is worth seeing why. Heun corrects each step with the slope
# `(x − D(x, σ)) / σ` at the *end* of the step. With so few steps, the first one jumps from σ = 5 to σ ≈ 0.3 or
# even 0.002, and at such a small σ the slope divides the denoiser's small errors by σ: a 1% error in `D` becomes a
# huge slope, multiplied back by the whole step length. With more steps (smaller jumps) Heun recovers. Churn adds
# fresh noise before each step, which helps image generators correct their mistakes over many steps; at 3 steps it
# changes little.
#
# ## 4. One step vs three steps, side by side

# %%
idx = list(range(min(3, len(truth))))
one = model.predict_next(context[idx], actions[idx], num_steps=1, generator=torch.Generator().manual_seed(1))
three = model.predict_next(context[idx], actions[idx], num_steps=3, generator=torch.Generator().manual_seed(1))
frames, titles = [], []
for k in idx:
    frames += [context[k, -1], truth[k], one[k], three[k]]
    titles += ["last real", "truth", "1 step", "3 steps"]
show_frames(frames, titles, columns=4, scale=1.9, suptitle="the same predictions with 1 and 3 Euler steps")

# %% [markdown]
# ## 5. A dream
# Now the model plays on its own. From the first 4 frames of a held-out episode, under the actions the real player
# took, it predicts a frame, appends it to its context, predicts the next, and so on: every frame after the first is
# predicted from predictions. Errors can compound — a misplaced ball becomes a different game — and the question is
# how long the dream stays close to the real game and, when it leaves it, whether it stays *plausible*.

# %%
episode = max(test_data, key=len)
horizon = min(len(episode) - 4, P.pick(smoke=8, course=120, paper=1000))
real = torch.from_numpy(episode.obs[: 4 + horizon]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
acts = torch.from_numpy(episode.act[: 4 + horizon - 1])[None]
dreams = {}
for n in (1, 3):
    started = time.perf_counter()
    dreams[n] = model.rollout(real[None, :4], acts, num_steps=n, generator=torch.Generator().manual_seed(0), progress=True)[0]
    seconds = time.perf_counter() - started
    print(f"{n} Euler step(s): dreamed {horizon} frames in {seconds:.1f} s ({horizon / seconds:.1f} frames/s)")

# %%
copy_err = (real[3:4] - real[4:]).pow(2).mean((1, 2, 3)).numpy()  # "the game froze at the last real frame"
plt.figure(figsize=(7, 2.8))
for n, dream in dreams.items():
    plt.plot((dream - real[4:]).pow(2).mean((1, 2, 3)).numpy(), label=f"dream, {n} Euler step{'s' if n > 1 else ''}")
plt.plot(copy_err, label="frozen last real frame", alpha=0.7)
plt.xlabel("steps into the dream"); plt.ylabel("MSE vs the real episode"); plt.legend(fontsize=8)
plt.title("how far the dream drifts from the real episode"); plt.tight_layout(); plt.show()
for n, dream in dreams.items():
    err = (dream - real[4:]).pow(2).mean((1, 2, 3))
    marks = [t for t in (15, 30, 60, 120) if t <= horizon]
    print(f"{n} step(s): MSE at step " + ", ".join(f"{t}: {err[t - 1]:.4f}" for t in marks))

# %%
every = max(1, horizon // 10)
picks = list(range(0, horizon, every))[:10]
show_frames([real[4 + t] for t in picks] + [dreams[1][t] for t in picks] + [dreams[3][t] for t in picks],
            [f"t={t + 1}" for t in picks] * 3, columns=len(picks), scale=1.3,
            row_labels=["real", "dream, 1 step", "dream, 3 steps"], suptitle="the real episode and two dreams under the same actions")

# %% [markdown]
# Read the plot with care. Over the first 15 steps, the horizon DIAMOND's agent imagines, both dreams stay close to
# the real game. Beyond that, our **course model** drifts when sampled with 3 steps: each step commits to
# sharp details, small artefacts in the bricks get fed back as context and grow. With 1 step the model predicts
# something closer to the conditional mean, which blurs the ball away but keeps the frame stable. DIAMOND's model,
# trained about 100× longer on data from a competent policy, stays stable at 3 steps over long dreams (paper, §5.1);
# notebook 04 measures how much of the stability comes from EDM itself by training a DDPM world model the same way.

# %%
length = min(horizon, P.pick(smoke=8, course=60, paper=120))
animate([list(real[4 : 4 + length]), list(dreams[1][:length]), list(dreams[3][:length])], fps=12, scale=2.0,
        titles=["real", "dream, 1 step", "dream, 3 steps"])

# %% [markdown]
# **Next:** notebook 04 measures the paper's central claim about this sampler: an EDM world model stays stable over a
# long dream even with one denoising step, where a DDPM world model drifts away.
