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
# # 05 · The reward and termination model
#
# The world model of notebooks 02–04 draws the next frame, and nothing else. An agent that learns in imagination
# also needs to know **what it earns** and **when its episode ends**. DIAMOND (Alonso et al. 2024, Section 3) learns
# both with a second, separate network `R_ψ` that reads a *transition* — the frame before, the action, the frame
# after — and predicts
#
# * the **sign of the reward**, as three classes {−1, 0, +1} (Atari rewards are clipped to their sign for learning);
# * whether the episode **ends** there, as two classes.
#
# Why a separate model, and not two more outputs of the denoiser? The denoiser is asked a different question at every
# noise level and never sees a clean "now" to read a score from; a reward is a rare, discrete event best learned
# with a classifier and a cross-entropy loss. And because an event often shows only *after* it happened (a brick
# vanishes one frame, the score changes the next), the model carries a memory: an **LSTM** over the sequence of
# transitions. In imagination the model samples a reward and an end for every imagined step, one at a time, with its
# LSTM state carried along.
#
# This notebook measures how rare rewards and ends are, builds the loss, checks that stepping one transition at a
# time gives the same answer as a whole sequence, trains the model with a live curve, and scores it on held-out
# episodes: per-class precision and recall, confusion matrices, and a timeline of one episode.

# %%
import json
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import diamond_lite
from diamond_lite import atari, data, memory, rew_end
from diamond_lite.pretrain import checkpoint_path
from diamond_lite.rew_end import HORIZON
from diamond_lite.viz import LiveCurves, show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
GAME = diamond_lite.COURSE_GAME
torch.manual_seed(0)
print(f"profile: {P}   game: {GAME}   imagination horizon: {HORIZON}")

# %% [markdown]
# ## 1. Data, and how rare the events are
# Random-policy Breakout, as in the earlier notebooks. In the *train* split an episode ends when a life is lost
# (DIAMOND's protocol, notebook 00), so ends are as frequent as deaths. A second set of episodes, collected the same
# way with another seed, is held out to score the model on.

# %%
root = Path("../runs/notebook05") / GAME
train_data = data.Dataset(root / "train")
missing = P.pick(smoke=400, course=6000, paper=20000) - train_data.num_steps
if missing > 0:
    data.Collector(atari.make_env(GAME, split="train", seed=0), train_data, seed=0).collect(num_steps=missing)
test_data = data.Dataset(root / "test")
missing = P.pick(smoke=200, course=2000, paper=5000) - test_data.num_steps
if missing > 0:
    data.Collector(atari.make_env(GAME, split="train", seed=1), test_data, seed=1).collect(num_steps=missing)
stats = train_data.statistics()
print(f"train: {stats['episodes']} episodes, {stats['steps']} steps;  held out: {len(test_data)} episodes, {test_data.num_steps} steps")

# %%
rew_counts, end_counts = stats["reward_sign_counts"], stats["end_counts"]
fig, axes = plt.subplots(1, 2, figsize=(8, 2.8))
total = stats["steps"]
axes[0].bar(["−1", "0", "+1"], [rew_counts[k] / total for k in (-1, 0, 1)], color=["C3", "C7", "C2"])
axes[0].set_title("reward sign"); axes[0].set_yscale("log"); axes[0].set_ylabel("share of steps (log)")
axes[1].bar(["goes on", "ends"], [end_counts[k] / total for k in (0, 1)], color=["C7", "C1"])
axes[1].set_title("episode end"); axes[1].set_yscale("log")
for ax in axes:
    for bar in ax.patches:
        ax.annotate(f"{bar.get_height():.2%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)
fig.tight_layout(); plt.show()
print(f"a model that always answers 'reward 0, goes on' is right on {rew_counts[0] / total:.1%} and {end_counts[0] / total:.1%} of steps")

# %% [markdown]
# That last line is the trap: **accuracy is useless here**. A model can be 99% accurate and never predict a single
# reward. We will judge it by the *recall* of each class (of the real rewards, how many it finds) and its
# *precision* (of the rewards it announces, how many are real). DIAMOND trains with plain cross-entropy, no class
# weights: the imagination *samples* from the predicted probabilities, so a well-calibrated 30% chance of a reward is
# worth more than a forced yes or no.

# %% [markdown]
# ## 2. Segments that run past the end
# The model learns on segments of `horizon + 4 = 19` steps: the first 4 frames burn the LSTM in (as in imagination,
# where an episode starts from 4 real frames), the rest are what imagination will ask about. The sampler is allowed to
# run **past the end** of an episode (`can_sample_beyond_end`, DIAMOND's reward/end sampler only), so an ending can
# fall at any position of a segment — otherwise every end would sit in the last slot. The slot right after the last
# step holds the episode's **final frame** (the one that shows the lost ball), so the last transition is complete.

# %%
sampler = data.SegmentSampler(train_data, HORIZON + 4, 64, sample_weights=None, seed=1, can_sample_beyond_end=True)
for _ in range(100):  # draw until a segment runs past an episode's end
    batch = sampler.sample()
    rows = np.flatnonzero(batch.end.any(1) & ~batch.mask[:, -1])
    if len(rows):
        break
row = int(rows[0])
last = int(np.flatnonzero(batch.mask[row])[-1])
shown = range(max(0, last - 4), min(last + 3, HORIZON + 4))
frames = [batch.obs[row, t] for t in shown]
titles = [("step" if batch.mask[row, t] else "final frame" if batch.obs_mask[row, t] else "padding") + f"\nend={int(batch.end[row, t])}"
          for t in shown]
show_frames(frames, titles, scale=1.5, suptitle="the last steps of an episode, its final frame, then padding")
print("mask     :", batch.mask[row].astype(int))
print("obs_mask :", batch.obs_mask[row].astype(int))

# %% [markdown]
# ## 3. The loss, built by hand
# For a segment of `L` frames there are `L − 1` transitions `(x_t, a_t, x_{t+1})`. The model returns logits for each;
# the loss is the cross-entropy of the reward sign (targets `sign(r_t) + 1` ∈ {0, 1, 2}) plus that of the end, over
# the **real** steps only: padding before the start and after the end is masked out. We write it from the model's
# logits and compare with the package's `RewEndModel.loss`.

# %%
cfg = rew_end.rew_end_config(P.name, atari.make_env(GAME).action_space.n)
model = rew_end.RewEndModel(cfg, game=GAME)
tensors = sampler.sample(8).to_torch()
print(f"{model.num_parameters():,} parameters ({P} profile; the paper's has 5,902,656 at 18 actions)")


# %% [markdown]
# **Exercise — the reward/end loss.** Write `reward_end_loss(model, batch)`: call `model(obs, act, next_obs)` on the
# `L − 1` transitions of the batch, and return the sum of the two cross-entropies over the real steps.

# %% nbgrader={"grade": false, "grade_id": "reward_end_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def reward_end_loss(model, batch):
    """Cross-entropy of the reward sign plus that of the end, over the real transitions of ``batch``."""
    ### BEGIN SOLUTION
    obs, act, rew, end, mask = batch["obs"], batch["act"], batch["rew"], batch["end"], batch["mask"]
    logits_rew, logits_end, _ = model(obs[:, :-1], act[:, :-1], obs[:, 1:])  # transitions t -> t+1
    real = mask[:, :-1]  # the last frame only serves as a "next frame"
    target_rew = rew[:, :-1].sign().long() + 1
    target_end = end[:, :-1].long()
    return F.cross_entropy(logits_rew[real], target_rew[real]) + F.cross_entropy(logits_end[real], target_end[real])
    ### END SOLUTION


# %% nbgrader={"grade": true, "grade_id": "reward_end_loss_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
mine, (package, _) = reward_end_loss(model, tensors), model.loss(tensors)
print(f"by hand: {mine.item():.6f}   package: {package.item():.6f}")
assert torch.allclose(mine, package, atol=1e-4)
### BEGIN HIDDEN TESTS
padded = {k: v.clone() for k, v in tensors.items()}
padded["mask"][:, :3] = False  # three padded steps at the start of every segment ...
padded["rew"][:, :3] = 1 - padded["rew"][:, :3]  # ... whose targets must not matter
assert torch.allclose(reward_end_loss(model, padded), model.loss(padded)[0], atol=1e-4)
### END HIDDEN TESTS

# %% [markdown]
# At initialisation the loss is close to `ln 3 + ln 2 ≈ 1.79`: the model has no opinion yet.
#
# ## 4. One step at a time equals the whole sequence
# In training the LSTM reads 18 transitions in one call; in imagination it reads 3 burn-in transitions, then one
# transition per imagined step, carrying its state `(h, c)`. Both must give the same predictions.

# %%
with torch.no_grad():
    obs, act = tensors["obs"], tensors["act"]
    whole_rew, whole_end, _ = model(obs[:, :-1], act[:, :-1], obs[:, 1:])
    step_rew, _, state = model(obs[:, :3], act[:, :3], obs[:, 1:4])  # burn-in
    steps = [step_rew]
    for t in range(3, obs.shape[1] - 1):
        r, _, state = model(obs[:, t : t + 1], act[:, t : t + 1], obs[:, t + 1 : t + 2], state)
        steps.append(r)
gap = (torch.cat(steps, 1) - whole_rew).abs().max().item()
print(f"largest difference between stepping and the whole sequence: {gap:.2e}")
assert gap < 1e-2  # bf16 autocast in the encoder on CPUs that support it; 1e-6 in fp32

# %% [markdown]
# ## 5. Training, with a live curve
# AdamW (lr 1e-4, weight decay 1e-2, 100 warm-up steps, gradient clip 100) on recency-weighted segments, as DIAMOND.
# The curves show both terms. Expect a **plateau**: at first the cheapest way down is to predict every class at its
# base rate (about 0.04 nats for the rewards, 0.12 for the ends here), and the model sits there until it finds the
# few pixels that announce a reward or a lost ball.

# %%
train_sampler = data.SegmentSampler(train_data, HORIZON + 4, P.pick(smoke=4, course=16, paper=32), seed=0, can_sample_beyond_end=True)
curves = LiveCurves(["loss_rew", "loss_end"], every=P.pick(smoke=5, course=25, paper=50), smooth=10, title="reward/end model training")
for step in tqdm(range(P.pick(smoke=10, course=300, paper=2000)), desc="train reward/end model"):
    loss, metrics = model.train_step(train_sampler.sample().to_torch(model.device))
    curves.add(step, loss_rew=metrics["loss_rew"].item(), loss_end=metrics["loss_end"].item())
curves.draw()

# %% [markdown]
# A few minutes of training stays on the plateau. `make pretrain` trained the same configuration for an hour on
# 30,000 random-policy steps (`data/checkpoints/Breakout_rew_end_model_course.pt`); its report keeps the learning
# curve. The plateau lasts about 2,000 updates, then the loss falls by a factor of seven in a few hundred: the moment
# the model starts to see rewards and ends.

# %%
path = checkpoint_path(GAME, P.name, "rew_end_model")
pretrained = rew_end.RewEndModel.load(path, game=GAME, config=cfg) if path.exists() else None
if pretrained is not None:
    report_json = json.loads(path.with_suffix(".json").read_text())
    steps_, losses_ = np.array(report_json["curve"]).T
    plt.figure(figsize=(6, 2.8))
    plt.plot(steps_, losses_)
    plt.yscale("log"); plt.xlabel("update"); plt.ylabel("loss (mean of 50 updates)"); plt.grid(alpha=0.3)
    plt.title(f"make pretrain: {report_json['updates']} updates in {report_json['minutes']:.0f} minutes"); plt.tight_layout(); plt.show()
    print(f"pretrained: {pretrained.num_updates} updates")
else:
    print(f"no {path.name}: scoring the model trained above")


# %% [markdown]
# ## 6. Precision, recall and confusion on held-out episodes
# We score the model the way imagination uses it: windows of 15 steps, each after a 3-transition burn-in, from a zero
# LSTM state; every step of the held-out episodes is scored once. Rows of a confusion matrix are the truth, columns
# the model's most likely class.

# %%
def report(name, result):
    print(name)
    for head, labels in (("rew", ["−1", "0", "+1"]), ("end", ["goes on", "ends"])):
        pr = result[head]
        for i, label in enumerate(labels):
            print(f"  {head} {label:>8}: support {int(pr['support'][i]):6d}   precision {pr['precision'][i]:.2f}   recall {pr['recall'][i]:.2f}")

held_out = list(test_data)
results = {"trained here": rew_end.evaluate(model, held_out, window=HORIZON)}
if pretrained is not None:
    results["pretrained"] = rew_end.evaluate(pretrained, held_out, window=HORIZON)
for name, result in results.items():
    report(name, result)

# %%
best = results.get("pretrained", results["trained here"])
fig, axes = plt.subplots(1, 2, figsize=(8, 3.4))
for ax, key, labels in ((axes[0], "confusion_rew", ["−1", "0", "+1"]), (axes[1], "confusion_end", ["goes on", "ends"])):
    c = best[key]
    ax.imshow(c / np.maximum(c.sum(1, keepdims=True), 1), cmap="Blues", vmin=0, vmax=1)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(int(c[i, j])), ha="center", va="center", fontsize=9)
    ax.set_xticks(range(len(labels)), labels); ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted"); ax.set_ylabel("true")
axes[0].set_title("reward sign"); axes[1].set_title("end")
fig.suptitle("confusion on held-out steps (colour: share of each true class)", fontsize=10); fig.tight_layout(); plt.show()

# %% [markdown]
# ## 7. A timeline of one held-out episode
# The true rewards and end against the model's predicted probabilities, step by step, with the frames around the
# first reward.

# %%
best_model = pretrained if pretrained is not None else model
episode = max(held_out, key=lambda e: (np.abs(e.rew).sum(), len(e)))
pred = rew_end.predict_episode(best_model, episode, window=HORIZON)
t = np.arange(len(pred["rew"]))
fig, axes = plt.subplots(2, 1, figsize=(9, 3.8), sharex=True)
axes[0].plot(t, pred["probs_rew"][:, 2], color="C2", label="P(reward +1)")
axes[0].plot(t, pred["probs_rew"][:, 0], color="C3", label="P(reward −1)")
axes[0].vlines(t[pred["rew"] > 0], 0, 1, color="k", lw=1, label="true +1")
axes[0].set_ylim(0, 1.05); axes[0].legend(fontsize=8, loc="upper left")
axes[1].plot(t, pred["probs_end"][:, 1], color="C1", label="P(end)")
axes[1].vlines(t[pred["end"] > 0], 0, 1, color="k", lw=1, label="true end")
axes[1].set_ylim(0, 1.05); axes[1].legend(fontsize=8, loc="upper left"); axes[1].set_xlabel("step")
fig.suptitle(f"held-out episode: {len(episode)} steps, return {episode.score:.0f}", fontsize=10); fig.tight_layout(); plt.show()

# %%
hits = np.flatnonzero(pred["rew"] != 0)
k = int(hits[0]) if len(hits) else len(episode) - 1
window = range(max(0, k - 3), min(len(episode), k + 3))
frames = [episode.obs[i] if i < len(episode) else episode.final_obs for i in window]
titles = [f"t={i}  r={episode.rew[i]:+.0f}\nP(+1)={pred['probs_rew'][i, 2]:.2f}" for i in window]
show_frames(frames, titles, scale=1.7, suptitle="frames around the first reward (the frame after step t shows its effect)")

# %% [markdown]
# ## What to take away
# * Rewards and ends are rare events; accuracy hides that, per-class recall and precision show it.
# * DIAMOND's reward/end model is a CNN over the pair of frames, told the action through adaptive group norm, with an
#   LSTM for memory; it trains with cross-entropy on 19-step segments that may run past an episode's end.
# * The same model steps one transition at a time inside imagination. Notebook 06 puts it there, next to the world
#   model, and trains an agent on what they imagine together.
