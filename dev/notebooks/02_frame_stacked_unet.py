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
# # 02 · The frame-stacked U-Net world model
#
# Notebook 01 built a denoiser for single Atari frames. A **world model** denoises something more specific: the
# *next* frame of the game, given what came before and what the agent did. DIAMOND (Alonso et al. 2024, §3) does it
# with the simplest conditioning that works:
#
# * **frames** — the last 4 frames are stacked on the channel axis with the noisy next frame, so the U-Net's first
#   convolution sees 4×3 + 3 = 15 channels at every pixel;
# * **actions and noise level** — each of the 4 past actions gets a learned embedding, the noise level gets Fourier
#   features, and their sum goes through a small MLP into one *conditioning vector*; every residual block reads it
#   through **adaptive group normalisation**.
#
# This notebook builds the network piece by piece with shapes printed, shows the conditioning at work, builds DIAMOND's
# training loss (with its second, *autoregressive* term), overfits a tiny batch, trains the world model, compares its
# one-step predictions with the truth, and shows what the second term buys in long dreams.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import diamond_lite
from diamond_lite import atari, data, edm, memory, unet, world_model
from diamond_lite.pretrain import checkpoint_path, load_or_train
from diamond_lite.viz import LiveCurves, show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
GAME = diamond_lite.COURSE_GAME
torch.manual_seed(0)
print(f"profile: {P}   game: {GAME}   torch threads: {torch.get_num_threads()}")


# %% [markdown]
# ## 1. Data
# Random-policy episodes, as in notebook 00: one dataset to train on and a separate, held-out one to judge the model.

# %%
def fresh_dataset(name, num_steps, seed):
    directory = Path("../runs/notebook02") / GAME / name
    for f in directory.glob("*.npz"):
        f.unlink()
    dataset = data.Dataset(directory)
    data.Collector(atari.make_env(GAME, split="train", seed=seed), dataset, seed=seed).collect(num_steps=num_steps)
    return dataset


train_data = fresh_dataset("train", P.pick(smoke=400, course=10_000, paper=100_000), seed=0)
test_data = fresh_dataset("test", P.pick(smoke=200, course=2_000, paper=10_000), seed=1)
env = atari.make_env(GAME)
NUM_ACTIONS = env.action_space.n
print(train_data.statistics()["steps"], "train steps;", test_data.num_steps, "held-out steps; actions:", env.action_names)

# %% [markdown]
# A world-model training example is a segment of steps: 4 frames and 4 actions to condition on, and the 5th frame
# to predict. `act[:, 3]` is the action taken *at* the 4th frame, the one that leads to the 5th. DIAMOND's segments
# hold one frame more, a 6th, for the second term of its loss (section 4); the first five are the example.

# %%
sampler = data.SegmentSampler(train_data, seq_length=6, batch_size=4, seed=0)
batch = sampler.sample().to_torch()
for key, value in batch.items():
    print(f"{key:>6}: {tuple(value.shape)} {value.dtype}")
show_frames([batch["obs"][0, t] for t in range(6)],
            [f"x(t-{3 - t})  a={env.action_names[batch['act'][0, t]]}" for t in range(4)] + ["x(t+1): target", "x(t+2): 2nd target"],
            scale=2.0, suptitle="one training example")

# %% [markdown]
# ## 2. The building blocks
#
# ### Noise level → Fourier features
# The scalar `c_noise = ln(σ)/4` becomes a vector of cosines and sines at random fixed frequencies. Nearby noise levels
# get similar vectors, distant ones very different vectors, which a network reads far more easily than one number.

# %%
features = unet.FourierFeatures(32)
sigmas = torch.logspace(-2.7, 1.3, 200)
emb = features(sigmas.log() / 4)
plt.figure(figsize=(7, 2.6))
plt.imshow(emb.T, aspect="auto", cmap="RdBu", extent=[0, 199, 31, 0])
ticks = [0, 50, 100, 150, 199]
plt.xticks(ticks, [f"{sigmas[i]:.3g}" for i in ticks]); plt.xlabel("σ"); plt.ylabel("feature")
plt.title("Fourier features of the noise level"); plt.colorbar(); plt.tight_layout(); plt.show()
print("embedding:", tuple(emb.shape))


# %% [markdown]
# ### Adaptive group norm — build it yourself
# Group norm normalises each group of 32 channels to zero mean and unit variance. The *adaptive* version then scales
# and shifts every channel by amounts computed from the conditioning vector: `x·(1 + scale) + shift`. This is the only
# way actions and noise level enter the U-Net's blocks, so it has to be right. Write it, then compare with the package.

# %% nbgrader={"grade": false, "grade_id": "ada_group_norm", "locked": false, "schema_version": 3, "solution": true, "task": false}
class MyAdaGroupNorm(torch.nn.Module):
    def __init__(self, channels, cond_channels):
        super().__init__()
        self.groups = max(1, channels // 32)
        self.linear = torch.nn.Linear(cond_channels, 2 * channels)  # predicts scale and shift per channel

    def forward(self, x, cond):
        ### BEGIN SOLUTION
        x = F.group_norm(x, self.groups, eps=1e-5)
        scale, shift = self.linear(cond).chunk(2, dim=1)
        return x * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "ada_group_norm_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
mine, theirs = MyAdaGroupNorm(64, 256), unet.AdaGroupNorm(64, 256)
theirs.load_state_dict(mine.state_dict())
x, cond = torch.randn(2, 64, 8, 8), torch.randn(2, 256)
torch.testing.assert_close(mine(x, cond), theirs(x, cond))
print("matches diamond_lite.unet.AdaGroupNorm")
### BEGIN HIDDEN TESTS
# with the conditioning switched off (zero linear layer), each group of 32 channels comes out standardised
probe = MyAdaGroupNorm(96, 16)
torch.nn.init.zeros_(probe.linear.weight); torch.nn.init.zeros_(probe.linear.bias)
y = probe(torch.randn(3, 96, 5, 5) * 4 + 2, torch.randn(3, 16)).reshape(3, 3, -1)
torch.testing.assert_close(y.mean(-1), torch.zeros(3, 3), atol=1e-4, rtol=0)
torch.testing.assert_close(y.var(-1, unbiased=False), torch.ones(3, 3), atol=1e-3, rtol=0)
# and the conditioning really scales and shifts each channel of each sample
mine, theirs = MyAdaGroupNorm(32, 8), unet.AdaGroupNorm(32, 8)
theirs.load_state_dict(mine.state_dict())
x, cond = torch.randn(4, 32, 6, 6), torch.randn(4, 8) * 3
torch.testing.assert_close(mine(x, cond), theirs(x, cond))
### END HIDDEN TESTS

# %% [markdown]
# ### Residual blocks and the U-Net
# A residual block is `x + conv(silu(norm(conv(silu(norm(x, c))), c)))`, with the second convolution initialised at
# zero, so a freshly built block changes nothing and a deep stack trains from the first step. The U-Net stacks them
# at four resolutions: 64×64 → 32×32 → 16×16 → 8×8 and back up, each up-block concatenating the matching down-path
# output (the *skip connections* that carry pixel-level detail straight to the output). Follow a tensor through it:

# %%
cfg_paper = world_model.WorldModelConfig(num_actions=NUM_ACTIONS)
net = world_model.FrameStackNet(cfg_paper)
shapes = []
hooks = [m.register_forward_hook(lambda m, i, o, name=name: shapes.append((name, tuple(o.shape))))
         for name, m in net.named_modules() if isinstance(m, (unet.ResBlock, unet.Downsample, unet.Upsample))]
with torch.no_grad():
    out = net(torch.randn(2, 3, 64, 64), torch.zeros(2), obs=batch["obs"][:2, :4], act=batch["act"][:2, :4])
for h in hooks:
    h.remove()
print("input: noisy next frame (2, 3, 64, 64) + 4 past frames (2, 4, 3, 64, 64) -> conv_in on 15 channels")
for name, shape in shapes:
    print(f"  {name:<28} {shape}")
print("output:", tuple(out.shape))


# %% [markdown]
# ### The forward pass — build it yourself
# Put the pieces together as `FrameStackNet.forward` does: the conditioning vector (the noise level's Fourier
# features plus the four action embeddings side by side, through a small MLP), the four past frames stacked on the
# channel axis and divided by `σ_data` (`net.frame_scale`, so they have the same scale as `c_in·x_noisy`),
# concatenated in front of the noisy frame, then `conv_in`, the U-Net, and `norm_out → SiLU → conv_out`. Use the
# submodules of `net`.

# %% nbgrader={"grade": false, "grade_id": "unet_forward", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_forward(net, x_in, c_noise, obs, act):
    """F(c_in·x_noisy, c_noise, obs, act) of DIAMOND's frame-stacked U-Net, from net's own layers."""
    ### BEGIN SOLUTION
    cond = net.cond_proj(net.noise_emb(c_noise) + net.act_emb(act).flatten(1))
    frames = obs.flatten(1, 2) / net.frame_scale
    x = net.conv_in(torch.cat([frames, x_in], dim=1))
    x = net.unet(x, cond)
    return net.conv_out(F.silu(net.norm_out(x)))
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "unet_forward_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
small = world_model.FrameStackNet(world_model.world_model_config("smoke", NUM_ACTIONS))
torch.nn.init.normal_(small.conv_out.weight, std=0.05)  # the real one starts at zero: F would be 0 whatever you wrote
x_in, c_noise = torch.randn(2, 3, 64, 64), torch.randn(2)
with torch.no_grad():
    torch.testing.assert_close(my_forward(small, x_in, c_noise, batch["obs"][:2, :4], batch["act"][:2, :4]),
                               small(x_in, c_noise, obs=batch["obs"][:2, :4], act=batch["act"][:2, :4]))
print("my_forward matches FrameStackNet.forward")
### BEGIN HIDDEN TESTS
# the order of the past frames and of the actions matters, and yours follows the package's
with torch.no_grad():
    obs_r, act_r = batch["obs"][:2, :4].flip(1), torch.randint(0, NUM_ACTIONS, (2, 4))
    torch.testing.assert_close(my_forward(small, x_in, c_noise, obs_r, act_r), small(x_in, c_noise, obs=obs_r, act=act_r))
    torch.testing.assert_close(my_forward(small, x_in * 0.3, c_noise + 1, obs_r, act_r), small(x_in * 0.3, c_noise + 1, obs=obs_r, act=act_r))
### END HIDDEN TESTS

# %% [markdown]
# ### The size of the paper's model
# DIAMOND's Atari world model has 64 channels at every resolution, 2 blocks per resolution, a 256-dimensional
# conditioning vector and attention only at the 8×8 bottleneck: **4.4M parameters**. The `course` profile halves the
# channels (and the conditioning) so a laptop CPU can train it; everything else is the same.

# %%
def count(module):
    return sum(p.numel() for p in module.parameters())


paper_full = world_model.FrameStackNet(world_model.WorldModelConfig(num_actions=18))
print(f"paper configuration, 18 actions: {count(paper_full):,} parameters (DIAMOND: 4,406,851)")
for name, child in paper_full.named_children():
    print(f"  {name:<10} {count(child):>9,}")
cfg = world_model.world_model_config(P.name, NUM_ACTIONS)
print(f"{P} profile, {NUM_ACTIONS} actions: {count(world_model.FrameStackNet(cfg)):,} parameters")

# %% [markdown]
# ## 3. DIAMOND's loss: a second term on the model's own prediction
# Notebook 01's loss denoises one frame given true context. But when the world model *dreams*, its context fills up
# with its own predictions, each a little wrong, and it has never been trained on such a context. DIAMOND's code
# (`Denoiser.forward`, with `num_autoregressive_steps: 1` in its `config/trainer.yaml`) therefore adds a second term
# to every update, on segments of 6 frames:
#
# 1. **term 1** — predict frame 5 from the real frames 1–4, exactly notebook 01's loss;
# 2. **term 2** — predict frame 6 from the real frames 2–4 *and the model's own estimate of frame 5*: the denoised
#    output of term 1 (one denoising step from term 1's noisy frame, snapped to 8 bits, no gradient through it).
#
# The loss is the mean of the two. Computed by hand below, next to the package's `WorldModel.loss`, with the same
# random draws:

# %%
cfg = world_model.world_model_config(P.name, NUM_ACTIONS)
probe = world_model.WorldModel(cfg, autocast=False, channels_last=False)
torch.nn.init.normal_(probe.denoiser.inner.conv_out.weight, std=0.05)  # a fresh model predicts c_skip·x only
obs, act = batch["obs"], batch["act"]
g = torch.Generator().manual_seed(0)
context, terms = obs.clone(), []
for i in range(2):  # term 1, then term 2 on a context holding term 1's estimate
    x0 = obs[:, 4 + i]
    sigma = edm.sample_training_sigma(len(x0), generator=g)
    x_noisy = probe.denoiser.apply_noise(x0, sigma, generator=g)
    cs = edm.precondition(sigma.view(-1, 1, 1, 1), 0.5, 0.3)
    with torch.no_grad():
        out = probe.denoiser.inner(cs.c_in * x_noisy, cs.c_noise.flatten(), obs=context[:, i : 4 + i], act=act[:, i : 4 + i])
    real = batch["mask"][:, 4 + i]  # a padded target (before an episode's start) does not count
    terms.append(((out - (x0 - cs.c_skip * x_noisy) / cs.c_out) ** 2)[real].mean())
    context[:, 4 + i] = edm.quantize_8bit(cs.c_skip * x_noisy + cs.c_out * out)  # the model's own estimate of frame 5
with torch.no_grad():
    package, metrics = probe.loss(batch, generator=torch.Generator().manual_seed(0))
print(f"term 1 {terms[0]:.4f}, term 2 {terms[1]:.4f}: mean {(terms[0] + terms[1]) / 2:.4f}; WorldModel.loss {package:.4f}")
torch.testing.assert_close(package, (terms[0] + terms[1]) / 2)
show_frames([obs[0, 4], context[0, 4], obs[0, 5]], ["real frame 5", "its estimate: term 2's context", "frame 6: term 2's target"],
            scale=2.0, suptitle="what the second term conditions on")

# %% [markdown]
# The estimate is often poor (its noise level was drawn for training, up to σ = 20): term 2 teaches the model to
# predict well from a context that is off, which is its situation in every dream. Section 7 measures what it buys.
#
# ## 4. Overfit one tiny batch
# Before a long run, check that the model *can* learn: four fixed examples, one fixed draw of noise levels and noise,
# many steps. The loss must fall far below where it started. (A larger learning rate than the paper's makes this quick.)

# %%
import dataclasses

probe = world_model.WorldModel(dataclasses.replace(cfg, lr=1e-3, lr_warmup_steps=10))
tiny_batch = data.SegmentSampler(train_data, probe.segment_length, 4, seed=1).sample().to_torch()
losses = []
for step in tqdm(range(P.pick(smoke=10, course=150, paper=300)), desc="overfit"):
    loss, _ = probe.train_step(tiny_batch, generator=torch.Generator().manual_seed(0))
    losses.append(float(loss))
plt.figure(figsize=(5, 2.5)); plt.semilogy(losses); plt.xlabel("step"); plt.ylabel("loss")
plt.title("overfitting 4 examples"); plt.tight_layout(); plt.show()
print(f"loss {losses[0]:.3f} -> {losses[-1]:.3f}")
if not P.is_smoke:
    assert losses[-1] < 0.3 * losses[0], "the model failed to overfit a tiny batch"

# %% [markdown]
# ## 5. Train the world model
# Now the real thing, with DIAMOND's optimiser (AdamW, lr 1e-4 after 100 warm-up steps, weight decay 0.01, gradient
# clip 1) on random segments of the training data. On a CPU the U-Net runs in bfloat16 with channels-last memory,
# which `WorldModel` switches on where it is faster.

# %%
model = world_model.WorldModel(cfg, game=GAME)
train_sampler = data.SegmentSampler(train_data, model.segment_length, P.pick(smoke=4, course=16, paper=32), sample_weights=None, seed=0)
num_updates = P.pick(smoke=10, course=300, paper=10_000)
curves = LiveCurves(["loss", "loss_autoregressive"], every=P.pick(smoke=5, course=50, paper=200), smooth=20,
                    title="world model training: the loss, and its second term alone")
started = time.perf_counter()
for step in tqdm(range(num_updates), desc="train"):
    loss, metrics = model.train_step(train_sampler.sample().to_torch())
    curves.add(step, loss=float(loss), loss_autoregressive=float(metrics["loss_autoregressive"]))
curves.draw()
seconds = time.perf_counter() - started
print(f"{num_updates} updates in {seconds / 60:.1f} min ({seconds / num_updates:.2f} s/update, bf16={model.use_autocast})")

# %% [markdown]
# A few hundred updates teach the model the static background and little else. `make pretrain` trains the same
# configuration for 2,500 updates (about an hour on one core of a laptop CPU) on 30k steps of data and saves it in `data/checkpoints/`; we use it from here on when it
# is there (and the model just trained otherwise).

# %%
pretrained = checkpoint_path(GAME, P.name)
if pretrained.exists():
    model = load_or_train("world_model", GAME, P.name, cfg)
else:
    print(f"no {pretrained.name}: using the model trained above ({model.num_updates} updates)")

# %% [markdown]
# ## 6. One-step predictions beside the truth
# Held-out segments: 4 real frames and actions in, one frame out (3 Euler steps, as DIAMOND samples). The bar to
# clear is the laziest possible predictor, **copying the last frame**: in Breakout most of the screen never moves, so
# the copy is nearly right, and only the ball and the paddle can beat it.

# %%
errors = world_model.one_step_errors(model, test_data, num_samples=P.pick(smoke=8, course=256, paper=1024), seed=0)
print(f"MSE of the world model (3 Euler steps): {errors['mse_model']:.5f}")
print(f"MSE of copying the last frame:          {errors['mse_copy_last']:.5f}   ({errors['samples']} held-out frames that moved)")
if pretrained.exists() and not P.is_smoke:
    assert errors["mse_model"] < errors["mse_copy_last"], "the trained world model should beat copying the last frame"

# %%
show_batch = data.SegmentSampler(test_data, 5, 64, sample_weights=None, seed=7).sample().to_torch()  # 4 frames and the next
moved = ((show_batch["obs"][:, 4] - show_batch["obs"][:, 3]).abs().flatten(1).amax(1) > 0) & show_batch["mask"].all(1)
idx = torch.nonzero(moved).flatten()[:4]
pred = model.predict_next(show_batch["obs"][idx, :4], show_batch["act"][idx, :4], generator=torch.Generator().manual_seed(0))
frames, titles = [], []
for k, i in enumerate(idx):
    truth, last = show_batch["obs"][i, 4], show_batch["obs"][i, 3]
    frames += [last, truth, pred[k], (pred[k] - truth).abs().mean(0, keepdim=True).repeat(3, 1, 1) * 2 - 1]
    titles += [f"last (a={env.action_names[show_batch['act'][i, 3]]})", "truth", "predicted", "|error|"]
show_frames(frames, titles, columns=4, scale=1.8, suptitle="one-step predictions on held-out data")

# %% [markdown]
# ## 7. The conditioning at work
# Same four frames, same starting noise — only the last action differs. A world model that listens to its actions
# moves the paddle accordingly. (Look at the bottom of each frame; the last panel shows where the predictions differ.)

# %%
i = idx[0]
context = show_batch["obs"][i : i + 1, :4].repeat(NUM_ACTIONS, 1, 1, 1, 1)
actions = show_batch["act"][i : i + 1, :4].repeat(NUM_ACTIONS, 1).clone()
actions[:, -1] = torch.arange(NUM_ACTIONS)
preds = torch.cat([model.predict_next(context[a : a + 1], actions[a : a + 1], generator=torch.Generator().manual_seed(0))
                              for a in range(NUM_ACTIONS)])
spread = (preds.max(0).values - preds.min(0).values).mean(0, keepdim=True).repeat(3, 1, 1) * 2 - 1
show_frames(list(preds) + [spread], [f"action {name}" for name in env.action_names] + ["where they differ"],
            scale=2.0, suptitle="same context and noise, different last action")

# %% [markdown]
# ## 8. What the second term buys: long dreams
# `make pretrain` also trains the same model *without* the second term (`--autoregressive-steps 0`), for about the
# same compute: 5,000 updates, twice as many, each half the work. Both dream from the same held-out starts under
# the real actions, feeding their predictions back as context (3 Euler steps); the error against the real frames, at
# every step of DIAMOND's imagination horizon (15) and beyond:

# %%
one_term_cfg = dataclasses.replace(cfg, num_autoregressive_steps=0)
one_term = load_or_train("world_model", GAME, P.name, one_term_cfg, train_data, name="world_model_one_term",
                         updates=P.pick(smoke=10, course=600, paper=600), batch_size=P.pick(smoke=4, course=16, paper=32))
if not pretrained.exists():
    print("(without the shipped checkpoints, two short trainings stand in: the curves below then say little)")
horizon = P.pick(smoke=5, course=30, paper=30)
dreams = {name: world_model.dream_errors(m, test_data, horizon=horizon, num_starts=P.pick(smoke=4, course=128, paper=256), seed=3)
          for name, m in {"with the second term (DIAMOND)": model, "first term only": one_term}.items()}
plt.figure(figsize=(7, 3))
for name, d in dreams.items():
    plt.plot(range(1, horizon + 1), d["dream_mse"], "o-", ms=3, label=f"{name}")
plt.plot(range(1, horizon + 1), next(iter(dreams.values()))["copy_last_mse"], ":", color="k", label="copying the last real frame")
plt.axvline(15, color="grey", lw=0.5); plt.yscale("log"); plt.xlabel("steps into the dream"); plt.ylabel("MSE vs real")
plt.legend(fontsize=8); plt.title("dream error on held-out episodes"); plt.tight_layout(); plt.show()
for name, d in dreams.items():
    steps = [1, min(15, horizon), horizon]
    print(f"{name:>32}: " + ", ".join(f"step {t}: {d['dream_mse'][t - 1]:.5f}" for t in steps))

# %% [markdown]
# **What this shows, and what it does not.** At the course's budget the model with one term dreams closer to the real
# game at every step: with a world model this far from converged (its loss still falling fast), twice the updates
# count for more than training on its own estimates. The second term is built for a model whose one-step errors are
# already small, where what hurts a long dream is compounding: DIAMOND trains for 400,000 updates, out of reach on a
# CPU. The course keeps DIAMOND's two terms in every profile, since profiles change budgets, never the algorithm
# (`docs/results.md`, "What the second term does at the course's budget").

# %% [markdown]
# **Next:** notebook 03 looks at the sampler on this world model: how many denoising steps a prediction needs, Euler vs
# Heun, and what happens when the model dreams hundreds of steps on its own outputs.
