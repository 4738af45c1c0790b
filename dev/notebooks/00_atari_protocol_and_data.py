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
# # 00 · The Atari 100k protocol and the replay data
#
# This course builds **DIAMOND** (Alonso et al., *Diffusion for World Modeling: Visual Details Matter in Atari*,
# NeurIPS 2024) piece by piece: an agent that learns to play Atari games almost entirely inside a *diffusion world
# model*, a network that dreams the next frame of the game. Before any model, we need the two things every later
# notebook stands on:
#
# 1. **The benchmark's rules.** Atari 100k gives an agent 100,000 steps of real play (about two hours of game time)
#    per game. The scores of every paper are only comparable if the environment is set up exactly the same way, so
#    we follow DIAMOND's set-up to the letter and test each setting.
# 2. **The replay data.** Every real step the agent plays is written to disk and later cut into short *segments*
#    that train the world model, the reward model and, through imagination, the agent.
#
# | notebook | builds |
# |---|---|
# | **00** | the Atari protocol and the data (this one) |
# | 01 | EDM preconditioning and the training objective |
# | 02, 03 | the frame-stacked U-Net world model, and sampling it |
# | 04 | DDPM vs EDM: why DIAMOND uses EDM |
# | 05 | the reward and termination model |
# | 06 | the actor-critic trained in imagination |
# | 07 | the full Atari 100k run |
# | 08 | playing inside the world model |
#
# Every notebook reads its sizes and budgets from a **profile**: `smoke` (seconds, for CI), `course` (minutes on a
# laptop CPU; the default) or `paper` (the paper's settings, for a GPU). Set `DIAMOND_PROFILE` before starting
# JupyterLab to change it.

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import diamond_lite
from diamond_lite import atari, data, memory, scores
from diamond_lite.viz import show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
GAME = diamond_lite.COURSE_GAME
print(f"profile: {P}   game: {GAME}")

# %% [markdown]
# ## 1. The environment, as DIAMOND sees it
#
# `diamond_lite.atari.make_env` returns an ordinary `gymnasium.Env`. Its docstring lists the protocol; here it is
# with the reason for each setting:
#
# | setting | value | why |
# |---|---|---|
# | sticky actions | off | DIAMOND (like IRIS, SimPLe) uses the `NoFrameskip-v4` games, which are deterministic given the actions |
# | action set | minimal (4 actions in Breakout, 18 at most) | fewer useless actions to learn about |
# | action repeat | 4 emulator frames per step | 100k steps = 400k frames; the agent decides 15 times a second |
# | max-pool | max of the last two of those frames | some games draw sprites on alternate frames only |
# | no-ops | 1 to 30 `NOOP` frames after every reset | the games are deterministic: this varies the start |
# | observation | 64×64 RGB, area-interpolated | DIAMOND's world model works at 64×64 in colour |
# | episode cap | 108,000 frames | the benchmark's 30 minutes of play |
# | life loss | ends a *training* episode, not a test one | a clearer learning signal; the score counts whole games |

# %%
env = atari.make_env(GAME, split="train", seed=0)
obs, info = env.reset()
print("actions:", env.action_names)
print("observation:", obs.shape, obs.dtype, "  reset info:", info)

raw = env.render()  # the emulator's own 210x160 frame
fig, axes = plt.subplots(1, 2, figsize=(6, 3.2), gridspec_kw={"width_ratios": [160, 64 * 160 / 210]})
axes[0].imshow(raw, interpolation="nearest"); axes[0].set_title(f"emulator frame {raw.shape[1]}×{raw.shape[0]}")
axes[1].imshow(obs, interpolation="nearest"); axes[1].set_title("observation 64×64")
for ax in axes: ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()

# %% [markdown]
# Notice what 64×64 keeps and what it loses: the bricks and the paddle survive, the score digits barely do, and the
# ball is a blur of one or two pixels. DIAMOND's whole argument is that a world model must get such **small visual
# details** right, because the agent's decisions depend on them.
#
# ## 2. Action repeat and the max-pool
#
# One agent step is four emulator frames. With `keep_raw_frames=True` the environment hands them back, so we can see
# what the observation is made of.

# %%
env = atari.make_env(GAME, split="train", seed=1, keep_raw_frames=True)
env.reset()
for action in [1, 1, 2, 2, 2, 2]:  # FIRE to launch the ball, then move right
    obs, reward, terminated, truncated, info = env.step(action)
frames = info["raw_frames"]
pooled = np.maximum(frames[2], frames[3])
show_frames(frames + [pooled, obs], [f"frame {i + 1}" for i in range(4)] + ["max(3, 4)", "observation"],
            suptitle="one agent step = 4 emulator frames; the observation pools the last two")

# %% [markdown]
# ### Build it yourself
# Write the preprocessing from the four raw frames to the observation, then check it against the environment.

# %%
import cv2


def preprocess(raw_frames, size=64):
    """The last two emulator frames, max-pooled pixel by pixel, then area-resized to size×size."""
    pooled = np.maximum(raw_frames[-2], raw_frames[-1])
    return cv2.resize(pooled, (size, size), interpolation=cv2.INTER_AREA)


mine = preprocess(frames)
assert mine.dtype == np.uint8 and mine.shape == (64, 64, 3)
assert np.array_equal(mine, obs), "your preprocessing differs from the environment's"
print("matches diamond_lite.atari exactly")

# %% [markdown]
# Why pool at all? Some games draw each sprite only on every other frame. Ms. Pac-Man's ghosts flicker this way: a
# single frame may miss one of them. Measure how many pixels the pooled frame has that the last frame alone lacks.

# %%
flicker_env = atari.make_env("MsPacman", split="test", seed=0, keep_raw_frames=True)
flicker_env.reset()
extra = []
for _ in range(P.pick(smoke=30, course=200, paper=200)):
    _, _, terminated, truncated, info = flicker_env.step(flicker_env.action_space.sample())
    f = info["raw_frames"]
    extra.append(float((np.maximum(f[-2], f[-1]) != f[-1]).any(-1).mean()))
    if terminated or truncated:
        flicker_env.reset()
print(f"Ms. Pac-Man: the pooled frame adds {100 * np.mean(extra):.2f}% of pixels on average "
      f"(up to {100 * np.max(extra):.2f}%) that the last frame alone would miss")
f = info["raw_frames"]
show_frames([f[-2], f[-1], np.maximum(f[-2], f[-1])], ["frame 3", "frame 4", "max"], scale=2.2)

# %% [markdown]
# ## 3. No-ops at reset
# With sticky actions off, the games are deterministic: the same actions always give the same frames. To keep an agent
# from memorising one trajectory, every real reset first plays a random number of `NOOP` frames, uniform in 1..30.

# %%
counts = [env.reset(seed=s)[1]["noops"] for s in range(P.pick(smoke=50, course=500, paper=500))]
plt.figure(figsize=(5, 2.2))
plt.hist(counts, bins=np.arange(0.5, 31.5), rwidth=0.8)
plt.xlabel("no-op frames at reset"); plt.ylabel("resets"); plt.tight_layout(); plt.show()
print("min", min(counts), "max", max(counts))


# %% [markdown]
# ## 4. A life loss ends a training episode, not the game
#
# In the `train` split, losing a life ends the episode (`terminated=True`, `info["life_loss"]=True`): the agent
# learns that losing a life is bad without having to tie it to a game over hundreds of steps later. The *game*
# goes on: the next `reset()` continues from the same frame, with no new no-ops, as DIAMOND's `DoneOnLifeLoss`
# wrapper does. In the `test` split, an episode is a whole game, which is what scores count.

# %%
def play_random(split, seed=0, max_steps=5000):
    env = atari.make_env(GAME, split=split, seed=seed)
    obs, _ = env.reset()
    frames, life_losses = [obs], 0
    for t in range(max_steps):
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        frames.append(obs)
        life_losses += info["life_loss"]
        if terminated or truncated:
            return env, frames, info, life_losses
    return env, frames, info, life_losses


train_env, train_frames, train_info, _ = play_random("train")
print(f"train split: episode ended after {len(train_frames) - 1} steps; info = {train_info}")
next_obs, next_info = train_env.reset()
print("next reset:", next_info, "| same frame as the end of the last episode:", np.array_equal(next_obs, train_frames[-1]))
_, test_frames, test_info, test_losses = play_random("test")
print(f"test split: episode lasted {len(test_frames) - 1} steps through {test_losses} life losses; info = {test_info}")
show_frames(train_frames[-6:], [f"t={len(train_frames) - 6 + i}" for i in range(6)], suptitle="the last steps of a train episode: the ball is lost")

# %% [markdown]
# ## 5. Collecting random-policy episodes into a dataset
#
# DIAMOND's first epoch fills the dataset with a random policy (5k to 10k steps in the paper). Each finished episode
# is written to its own file **atomically** (a temporary file, flushed to disk, then renamed): kill the process at
# any moment and every earlier episode is still readable. The tests kill a writer mid-write to check this.

# %%
DATA_DIR = Path("../runs/notebook00") / GAME
for f in DATA_DIR.glob("*.npz"):
    f.unlink()  # start afresh each time the notebook runs
dataset = data.Dataset(DATA_DIR)
collector = data.Collector(atari.make_env(GAME, split="train", seed=0), dataset, seed=0)

num_steps = P.pick(smoke=300, course=5_000, paper=10_000)
started = time.perf_counter()
finished = collector.collect(num_steps=num_steps)
seconds = time.perf_counter() - started
print(f"{num_steps} steps in {seconds:.1f} s ({num_steps / seconds:.0f} steps/s): "
      f"{len(finished)} finished episodes, {len(dataset)} files in {DATA_DIR}")

# %%
episode = dataset[int(np.argmax(dataset.lengths))]
step = max(1, len(episode) // 10)
show_frames(episode.obs[::step][:10], [f"t={t}" for t in range(0, len(episode), step)][:10],
            suptitle=f"the longest episode: {len(episode)} steps, score {episode.score:.0f}")

# %% [markdown]
# The dataset reloads from disk; nothing is kept only in memory.

# %%
reloaded = data.Dataset(DATA_DIR)
assert reloaded.num_steps == dataset.num_steps and len(reloaded) == len(dataset)
print(reloaded.statistics())

# %% [markdown]
# ## 6. Segments, as the models see the data
#
# Every model trains on **segments**: short windows of consecutive steps. The world model needs 4 frames of context
# and the frame to predict; the reward model and the actor-critic need longer ones (horizon 15 + 4 = 19 steps).
# DIAMOND draws them like this:
#
# 1. pick an episode, with **recency weights**: split the dataset into four quarters, oldest first, and draw from them
#    with probabilities 0.1, 0.1, 0.1 and 0.7, so the newest data (from the newest policy) is seen most;
# 2. pick a time step `t` uniformly in the episode;
# 3. take the segment of length `L` that ends between 1 and `L` steps after `t`, never past the episode's end.
#
# A segment near the start of an episode begins *before* it: the missing steps are padding, flagged by a **mask**,
# and the losses ignore them.

# %%
probs = data.episode_probabilities(dataset.lengths, [0.1, 0.1, 0.1, 0.7])
plt.figure(figsize=(6, 2.2))
plt.bar(np.arange(len(probs)), probs, width=1.0)
plt.xlabel("episode (oldest → newest)"); plt.ylabel("probability"); plt.title("recency weights")
plt.tight_layout(); plt.show()

# %%
sampler = data.SegmentSampler(dataset, seq_length=8, batch_size=4, seed=3)
batch = sampler.sample()
while batch.mask.all():  # draw until one segment shows padding, to see what it looks like
    batch = sampler.sample()
print("obs", batch.obs.shape, "act", batch.act.shape, "mask", batch.mask.shape)
print("mask (False = padding):\n", batch.mask.astype(int))
frames = [batch.obs[b, t] if batch.mask[b, t] else np.full_like(batch.obs[b, t], 128) for b in range(4) for t in range(8)]
show_frames(frames, columns=8, scale=1.1, row_labels=[f"ep {e}, start {s}" for e, s in zip(batch.episode_id, batch.start)],
            suptitle="four segments of 8 steps; grey = padding before the episode started")

# %% [markdown]
# ## 7. The statistics you will need later
#
# Two facts about Atari data shape the models of notebooks 05 and 06: **rewards are rare** and **episode ends are
# rarer**. Under a random policy almost every step has reward 0. A reward model that always says "0" would be right
# almost always, and useless, which is why notebook 05 looks at per-class precision and recall.

# %%
stats = dataset.statistics()
rew, end = stats["reward_sign_counts"], stats["end_counts"]
fig, axes = plt.subplots(1, 3, figsize=(11, 2.6))
axes[0].hist([e.score for e in dataset], bins=15); axes[0].set_title("episode return (random policy)")
axes[1].bar(["-1", "0", "+1"], [rew[-1], rew[0], rew[1]]); axes[1].set_yscale("log"); axes[1].set_title("reward sign (log scale)")
axes[2].bar(["continues", "ends"], [end[0], end[1]]); axes[2].set_yscale("log"); axes[2].set_title("episode end (log scale)")
plt.tight_layout(); plt.show()
for key, value in stats.items():
    print(f"{key:>22}: {value}")
print(f"{'rewarded steps':>22}: {100 * (rew[1] + rew[-1]) / stats['steps']:.2f}%")
print(f"{'episode ends':>22}: {100 * end[1] / stats['steps']:.2f}% of steps")

# %% [markdown]
# ## 8. Where the scores stand
#
# Scores are compared across games on the **human-normalized** scale: 0 is a random policy, 1 is the reference human
# player. DIAMOND's mean over the 26 games is 1.46. A training episode here ends at a life loss, so to place our random
# policy we need whole games: the `test` split.

# %%
test_env = atari.make_env(GAME, split="test", seed=123)
returns = []
for _ in range(P.pick(smoke=1, course=10, paper=30)):
    test_env.reset()
    total, done = 0.0, False
    while not done:
        _, r, terminated, truncated, _ = test_env.step(test_env.action_space.sample())
        total += r
        done = terminated or truncated
    returns.append(total)
ref = scores.load_reference()
print(f"our random policy on {GAME}: {np.mean(returns):.1f} ± {np.std(returns):.1f} over {len(returns)} games "
      f"(HNS {scores.human_normalized_score(GAME, np.mean(returns)):.2f})")
print(f"published random: {ref['random']['scores'][GAME]}, human: {ref['human']['scores'][GAME]}")
# The published random score comes from the DQN papers' random agent, which chose a new action at 10 Hz (every
# 6th frame) rather than at every agent step: its scores differ a little from a uniform policy played here.
diamond_game = scores.published("DIAMOND")[GAME]
print(f"DIAMOND on {GAME}: {diamond_game.mean():.1f} (HNS {scores.human_normalized_score(GAME, diamond_game.mean()):.2f}), "
      f"five seeds {diamond_game.tolist()}")
agg = scores.method_aggregates("DIAMOND")
print(f"DIAMOND over the 26 games: mean HNS {agg['mean']:.2f}, median {agg['median']:.2f}")

# %% [markdown]
# **Next:** notebook 01 turns these frames into training data for a diffusion model, and shows why DIAMOND's choice
# of diffusion formulation (EDM) matters.
