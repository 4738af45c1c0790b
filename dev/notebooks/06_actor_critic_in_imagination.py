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
# # 06 · The actor-critic, trained in imagination
#
# Everything so far was preparation for this: an agent that **learns without touching the game**. DIAMOND's agent
# (Alonso et al. 2024, Section 3) is a small CNN-LSTM actor-critic. It plays inside an *imagination environment* made
# of the two models we trained — the diffusion world model draws each next frame, the reward/termination model says
# what it earned and whether it is over — and improves with REINFORCE, a learned value as baseline, and λ-returns.
#
# The recipe, with DIAMOND's numbers:
#
# | piece | setting |
# |---|---|
# | start of an imagined episode | 4 real frames and actions from the replay data (recency-weighted) |
# | next frame | world model, 3 Euler steps |
# | reward, end | sampled from the reward/end model's probabilities |
# | horizon | 15 imagined steps, then truncated |
# | returns | λ-returns, γ = 0.985, λ = 0.95, bootstrapped from the value |
# | loss | REINFORCE with value baseline + value regression + 0.001 × entropy bonus |
# | optimiser | AdamW, lr 1e-4, no weight decay, gradient clip 100 |
#
# We derive λ-returns and check them, look at imagined rollouts, train the agent with live curves, and finally put it
# in the **real** game against a random policy.

# %%
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
from tqdm.auto import tqdm

import diamond_lite
from diamond_lite import actor_critic, atari, data, imagination, memory, rew_end, world_model
from diamond_lite.pretrain import load_or_train
from diamond_lite.rew_end import HORIZON
from diamond_lite.viz import LiveCurves, animate, show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
GAME = diamond_lite.COURSE_GAME
torch.manual_seed(0)
env = atari.make_env(GAME)
NUM_ACTIONS = env.action_space.n
ACTION_NAMES = env.action_names
print(f"profile: {P}   game: {GAME}   actions: {ACTION_NAMES}")


# %% [markdown]
# ## 1. λ-returns
# The agent sees a window of `T` imagined steps: rewards `r_t`, ends `d_t`, truncations, and its value of the frame
# after each step, `V(x_{t+1})`. How good was acting as it did at step `t`? Two extreme answers:
#
# * the **one-step TD target** `r_t + γ V(x_{t+1})`: low variance, but only as good as the value;
# * the **Monte-Carlo return** `r_t + γ r_{t+1} + γ² r_{t+2} + …`: unbiased, but noisy, and cut by the horizon.
#
# The λ-return mixes all the n-step returns in between, with weights `(1 − λ) λ^(n−1)`, and has a one-line recursion
# (Sutton & Barto 2018, §12.1):
#
# `G_t = r_t + γ (1 − d_t) [ (1 − λ) V(x_{t+1}) + λ G_{t+1} ]`,
#
# where `G_{t+1}` is replaced by `V(x_{t+1})` when the episode is truncated at `t` or the window ends. With λ = 0 it is
# the TD target; with λ = 1 the Monte-Carlo return, bootstrapped at the cut.
#
# **Exercise — λ-returns.** Write the recursion in plain Python, one number at a time, for one window given as lists
# (rewards are clipped to their sign first).

# %% nbgrader={"grade": false, "grade_id": "lambda_returns", "locked": false, "schema_version": 3, "solution": true, "task": false}
def lambda_returns_by_hand(rew, end, trunc, val_next, gamma, lam):
    """λ-returns of one episode window, from plain lists."""
    ### BEGIN SOLUTION
    returns = [0.0] * len(rew)
    following = val_next[-1]  # after the window: only the value is known
    for t in reversed(range(len(rew))):
        if end[t] or trunc[t]:
            following = val_next[t]  # the next step belongs to another episode
        blend = (1 - lam) * val_next[t] + lam * following
        returns[t] = np.sign(rew[t]) + gamma * (0.0 if end[t] else 1.0) * blend
        following = returns[t]
    return returns
    ### END SOLUTION


# %% [markdown]
# Now the package's batched version (`actor_critic.lambda_returns`, a loop over time on whole tensors) against it, on
# random windows with ends and truncations in the middle:

# %% nbgrader={"grade": true, "grade_id": "lambda_returns_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
g = torch.Generator().manual_seed(0)
B, T = 64, HORIZON
rew = torch.randint(-1, 2, (B, T), generator=g).float() * (torch.rand(B, T, generator=g) < 0.3)
end = torch.rand(B, T, generator=g) < 0.05
trunc = (torch.rand(B, T, generator=g) < 0.05) & ~end
val_next = torch.randn(B, T, generator=g)
package = actor_critic.lambda_returns(rew, end, trunc, val_next, 0.985, 0.95)
by_hand = torch.tensor([lambda_returns_by_hand(rew[b].tolist(), end[b].tolist(), trunc[b].tolist(), val_next[b].tolist(), 0.985, 0.95) for b in range(B)], dtype=torch.float32)
print(f"{int(end.sum())} ends and {int(trunc.sum())} truncations inside the windows; largest difference {(package - by_hand).abs().max():.2e}")
assert torch.allclose(package, by_hand, atol=1e-5)
### BEGIN HIDDEN TESTS
for gamma, lam in [(0.9, 0.0), (0.5, 1.0), (0.99, 0.7)]:
    want = actor_critic.lambda_returns(rew[:8], end[:8], trunc[:8], val_next[:8], gamma, lam)
    got = torch.tensor([lambda_returns_by_hand(rew[b].tolist(), end[b].tolist(), trunc[b].tolist(), val_next[b].tolist(), gamma, lam) for b in range(8)], dtype=torch.float32)
    assert torch.allclose(want, got, atol=1e-5), (gamma, lam)
assert lambda_returns_by_hand([5.0], [True], [False], [3.0], 0.9, 0.5) == [1.0]  # clipped reward, no bootstrap past an end
### END HIDDEN TESTS

# %% [markdown]
# What λ does, on one window: a single reward of +1 at step 10, a value that (wrongly) predicts 0.5 everywhere.
# λ = 0 sees the reward only at step 10; λ = 1 carries it back, discounted, to every earlier step; λ = 0.95 is in
# between, leaning on the value a little at each step.

# %%
r = torch.zeros(1, HORIZON); r[0, 10] = 1
v = torch.full((1, HORIZON), 0.5)
no = torch.zeros(1, HORIZON, dtype=torch.bool)
plt.figure(figsize=(7, 2.8))
for lam in [0.0, 0.5, 0.95, 1.0]:
    plt.plot(actor_critic.lambda_returns(r, no, no, v, 0.985, lam)[0], "o-", ms=3, label=f"λ = {lam}")
plt.axvline(10, color="k", lw=0.5); plt.xlabel("step t"); plt.ylabel("G_t"); plt.legend(fontsize=8)
plt.title("λ-returns of a window with one reward (V ≡ 0.5, γ = 0.985)"); plt.tight_layout(); plt.show()

# %% [markdown]
# ## 2. The imagination environment
# We load the course world model and reward/end model (`make pretrain`; without them a few quick training steps
# stand in, enough to run but not to learn), and real episodes to start imagined ones from.

# %%
replay = data.Dataset(Path("../runs/notebook06") / GAME / "replay")
missing = P.pick(smoke=300, course=3000, paper=10000) - replay.num_steps
if missing > 0:
    data.Collector(atari.make_env(GAME, split="train", seed=0), replay, seed=0).collect(num_steps=missing)

quick = P.pick(smoke=3, course=100, paper=100)  # updates of each model when make pretrain's are missing
wm = load_or_train("world_model", GAME, P.name, world_model.world_model_config(P.name, NUM_ACTIONS), replay, updates=quick)
rem = load_or_train("rew_end_model", GAME, P.name, rew_end.rew_end_config(P.name, NUM_ACTIONS), replay, updates=quick, batch_size=4)

NUM_ENVS = P.pick(smoke=2, course=8, paper=32)
dream = imagination.ImaginationEnv(wm, rem, data.SegmentSampler(replay, wm.n, NUM_ENVS, seed=0), num_envs=NUM_ENVS,
                                   horizon=HORIZON, num_denoising_steps=3)
obs, info = dream.reset()
print("reset:", tuple(obs.shape), "frames to burn in:", tuple(info["burnin_obs"].shape))

# %% [markdown]
# `reset` and `step` look like a gymnasium vector environment with same-step autoreset: a batch of observations in,
# a batch of actions out, and an episode that finishes restarts at once from new real frames, the frame that ended
# it passed in `info["final_obs"]`. The real game has the same interface (`imagination.RealVectorEnv`), so an agent
# cannot tell which one it plays.
#
# ## 3. The agent, and an imagined rollout before training
# The actor-critic: a 3×3 convolution, then four small residual blocks each followed by a 2×2 max-pool, an LSTM cell,
# and two linear heads that start at zero (a uniform policy, a zero value).

# %%
agent = actor_critic.ActorCritic(actor_critic.actor_critic_config(P.name, NUM_ACTIONS), game=GAME)
print(f"{agent.num_parameters():,} parameters ({P}; the paper's has 3,236,819 at 18 actions)")

def imagined_rollout(agent, steps=HORIZON, seed=0):
    """One window of imagination with the agent in control; what it saw, did, got, and thought."""
    torch.manual_seed(seed)
    loop = actor_critic.EnvLoop(dream, agent, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return loop.run(steps)

def show_rollout(traj, env_index=0, every=2, title=""):
    probs = traj["logits"][env_index].softmax(-1)
    ts = range(0, traj["obs"].shape[1], every)
    titles = [f"t={t} {ACTION_NAMES[int(traj['act'][env_index, t])]}\nr={traj['rew'][env_index, t]:+.0f}"
              f"{' END' if traj['end'][env_index, t] else ''}\nπ=" + " ".join(f"{p:.2f}" for p in probs[t]) for t in ts]
    show_frames([traj["obs"][env_index, t] for t in ts], titles, scale=1.6, suptitle=title)

before = imagined_rollout(agent)
show_rollout(before, title="imagined, untrained agent (π: probability of each action)")


# %% [markdown]
# ## 4. The loss
# From a window of `T = 15` steps the loss has three terms (DIAMOND's `ActorCritic.forward`):
#
# * **policy**: `−log π(a_t) · (G_t − V(x_t))`, with the advantage `G_t − V(x_t)` held constant (REINFORCE with a baseline);
# * **value**: `(V(x_t) − G_t)²`, with the λ-return `G_t` held constant (a target, not something to move);
# * **entropy**: `−0.001 · H(π)`, a small push to keep exploring.
#
# "Held constant" is the whole subtlety: the policy term must not train the value, and the value term must not move its
# own targets.
#
# **Exercise — the actor-critic loss.** Write it from a trajectory (`logits`, `act`, `val`, and what the λ-returns
# need) and the configuration (`cfg.gamma`, `cfg.lambda_`, `cfg.weight_value_loss`, `cfg.weight_entropy_loss`).

# %% nbgrader={"grade": false, "grade_id": "actor_critic_loss", "locked": false, "schema_version": 3, "solution": true, "task": false}
def my_actor_critic_loss(traj, cfg):
    """REINFORCE with a value baseline + value regression + entropy bonus, on one window."""
    ### BEGIN SOLUTION
    returns = actor_critic.lambda_returns(traj["rew"], traj["end"], traj["trunc"], traj["val_bootstrap"], cfg.gamma, cfg.lambda_)
    dist = torch.distributions.Categorical(logits=traj["logits"])
    advantage = (returns - traj["val"]).detach()
    policy = -(dist.log_prob(traj["act"]) * advantage).mean()
    value = cfg.weight_value_loss * ((traj["val"] - returns.detach()) ** 2).mean()
    return policy + value - cfg.weight_entropy_loss * dist.entropy().mean()
    ### END SOLUTION


# %% [markdown]
# The check, with autograd: same value as the package's loss, and the gradient that reaches the values is exactly the
# value regression's (the policy term sends none), while nothing reaches the bootstrap values behind the targets.

# %% nbgrader={"grade": true, "grade_id": "actor_critic_loss_tests", "locked": true, "points": 2, "schema_version": 3, "solution": false, "task": false}
traj = imagined_rollout(agent, seed=1)
traj = {k: v.detach() for k, v in traj.items()}
traj["val"] = traj["val"].clone().requires_grad_()
traj["val_bootstrap"] = traj["val_bootstrap"].clone().requires_grad_()
loss = my_actor_critic_loss(traj, agent.cfg)
package_loss, _ = actor_critic.actor_critic_loss(traj, agent.cfg)
d_val, d_boot = torch.autograd.grad(loss, [traj["val"], traj["val_bootstrap"]], allow_unused=True)
returns = actor_critic.lambda_returns(traj["rew"], traj["end"], traj["trunc"], traj["val_bootstrap"], agent.cfg.gamma, agent.cfg.lambda_)
expected = 2 * agent.cfg.weight_value_loss * (traj["val"] - returns).detach() / returns.numel()
print(f"loss {loss.item():.6f} (package {package_loss.item():.6f});  gradient on V equals the regression's: {torch.allclose(d_val, expected)};  "
      f"gradient reaching the targets: {0 if d_boot is None else d_boot.abs().max().item()}")
assert torch.allclose(loss, package_loss, atol=1e-6)
assert torch.allclose(d_val, expected) and (d_boot is None or (d_boot == 0).all())
### BEGIN HIDDEN TESTS
logits = traj["logits"].clone().requires_grad_()
traj2 = dict(traj, logits=logits)
d_logits = torch.autograd.grad(my_actor_critic_loss(traj2, agent.cfg), logits)[0]
logits_p = traj["logits"].clone().requires_grad_()
d_logits_p = torch.autograd.grad(actor_critic.actor_critic_loss(dict(traj, logits=logits_p), agent.cfg)[0], logits_p)[0]
assert torch.allclose(d_logits, d_logits_p, atol=1e-6)
### END HIDDEN TESTS

# %% [markdown]
# ## 5. Training in imagination
# Each update plays 15 more imagined steps in every environment (the episodes and LSTM states carry over between
# updates, as in DIAMOND) and takes one AdamW step. Three curves: the mean λ-return in imagination (what the agent
# expects to earn), the policy's entropy (in nats; ln 4 ≈ 1.39 is uniform over Breakout's 4 actions) and the value loss.

# %%
loop = actor_critic.EnvLoop(dream, agent, generator=torch.Generator().manual_seed(0))
curves = LiveCurves(["return in imagination", "entropy", "value loss"], every=P.pick(smoke=2, course=10, paper=20), smooth=5,
                    title="actor-critic in imagination")
for step in tqdm(range(P.pick(smoke=3, course=150, paper=1000)), desc="train actor-critic in imagination"):
    _, m = agent.train_step(loop)
    curves.add(step, **{"return in imagination": m["return"].item(), "entropy": m["entropy"].item(), "value loss": m["loss_values"].item()})
curves.draw()

# %%
after = imagined_rollout(agent, seed=0)
show_rollout(after, title="imagined, after training")
print(f"imagined reward per step: before {before['rew'].mean():.3f}, after {after['rew'].mean():.3f};  "
      f"imagined ends per step: before {before['end'].float().mean():.3f}, after {after['end'].float().mean():.3f}")
animate([after["obs"][0, t] for t in range(after["obs"].shape[1])], fps=5, titles=["an imagined episode of the trained agent"])

# %% [markdown]
# ## 6. In the real game, against a random policy
# The agent never saw the real game while learning. We play whole test episodes (all lives, DIAMOND's test protocol)
# with actions sampled from the policy (ε = 0, as DIAMOND evaluates), and as many with uniformly random actions.

# %%
num_episodes = P.pick(smoke=1, course=10, paper=100)
max_steps = P.pick(smoke=300, course=3000, paper=None)  # an agent that never serves would play 27k steps
test_env = atari.make_env(GAME, split="test", seed=123)
agent_returns = actor_critic.evaluate_policy(actor_critic.Policy(agent, epsilon=0.0, seed=0), test_env, num_episodes, max_steps=max_steps)
test_env = atari.make_env(GAME, split="test", seed=123)
test_env.action_space.seed(123)
random_returns = actor_critic.evaluate_policy(lambda obs: test_env.action_space.sample(), test_env, num_episodes, max_steps=max_steps)

def mean_sem(x):
    return f"{np.mean(x):.2f} ± {np.std(x) / np.sqrt(len(x)):.2f}"

print(f"{num_episodes} real test episodes each:  agent {mean_sem(agent_returns)}   random {mean_sem(random_returns)}  (mean ± standard error)")
plt.figure(figsize=(5, 2.8))
plt.boxplot([random_returns, agent_returns], tick_labels=["random", "agent (imagination only)"])
plt.ylabel("return"); plt.title(f"{GAME}: real test episodes"); plt.tight_layout(); plt.show()

# %% [markdown]
# ## What to take away
# * Imagination is a batched environment built from two learned models; an agent plays it exactly like a real one.
# * λ-returns trade the value's bias against the rewards' noise; the loss holds the advantage and the targets
#   constant, which the autograd check makes concrete.
# * A few minutes of imagined practice on a CPU (150 updates here; DIAMOND makes 400 per epoch for 1000 epochs), with
#   models trained on random play only, is a small start: the policy barely moves from uniform, and in the real game
#   it is not clearly better than random (compare the two means with their standard errors above). What
#   makes DIAMOND work is the **loop**: play the real game with the agent, grow the data, improve the world model
#   where the agent goes, train the agent again. Notebook 07 runs that loop — Atari 100k.
