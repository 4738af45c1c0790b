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
# # 08 · Playing inside the world model
#
# A diffusion world model that predicts the next frame from the last four and an action is, once trained, a **neural
# game engine**: give it a button press and it draws what the game would show. DIAMOND's repository lets a person play
# its models this way in a pygame window; here we do it in the notebook, and go a little further: switch between the
# world model and the real game, let the agent play, change the number of denoising steps while playing, record what
# happens, and browse the recordings.
#
# The logic of every control lives in `diamond_lite.player.Player`, a plain class (tested without a browser); the
# widget only draws it.

# %%
from pathlib import Path

import numpy as np
import torch

import diamond_lite
from diamond_lite import actor_critic, atari, data, memory, rew_end, world_model
from diamond_lite.player import DatasetViewer, Player, player_widget, save_gif, save_mp4, viewer_widget
from diamond_lite.pretrain import load_or_train
from diamond_lite.viz import animate, show_frames

memory.keep_freed_memory()  # freed memory stays in the process: faster training steps on a CPU (diamond_lite.memory)
P = diamond_lite.profile()
torch.manual_seed(0)

# %% [markdown]
# ## 1. The engine and a player
# If notebook 07's run has finished (or has checkpoints), its three models are loaded: the world model, the
# reward/end model and the agent it trained, on its game (Krull by default). Otherwise the models pretrained by `make
# pretrain` for Breakout (`data/checkpoints/`) and an untrained, uniformly random agent. Imagined games start from four real
# frames of a replay dataset.

# %%
from diamond_lite.run_folder import load_run

run_dir = Path("../runs") / f"{diamond_lite.COURSE_RUN_GAME}-{P}"
root = Path("../runs/notebook08")
if list(run_dir.glob("checkpoints/epoch_*.pt")):
    run = load_run(run_dir)
    GAME, wm, rem, agent, replay = run.cfg.game, run.world_model, run.rew_end_model, run.actor_critic, run.dataset
    print(f"{GAME}: the three models of {run.checkpoint} (epoch {run.epoch}, {run.env_steps:,} real steps)")
else:
    GAME = diamond_lite.COURSE_GAME
    num_actions = atari.make_env(GAME).action_space.n

    wm = load_or_train("world_model", GAME, P.name, world_model.world_model_config(P.name, num_actions))
    rem = load_or_train("rew_end_model", GAME, P.name, rew_end.rew_end_config(P.name, num_actions))
    agent = actor_critic.ActorCritic(actor_critic.actor_critic_config(P.name, num_actions), game=GAME)
    print(f"{GAME}: pretrained world and reward/end models; no run of notebook 07 yet, so an untrained agent")
    replay = data.Dataset(root / GAME / "replay")
    if replay.num_steps < P.pick(smoke=100, course=1000, paper=1000):
        data.Collector(atari.make_env(GAME, seed=0), replay, seed=0).collect(num_steps=P.pick(smoke=100, course=1000, paper=1000))
root = root / GAME
num_actions = agent.cfg.num_actions
player = Player(wm, rem, agent, replay, GAME, horizon=P.pick(smoke=10, course=200, paper=200), num_denoising_steps=3,
                record_dir=root / "recordings")

# %% [markdown]
# ## 2. Play
# Click an action (or type `w a s d`, space for FIRE, into the key box), switch the controller to **policy** and press
# ▶ on the clock to let the agent play, switch the environment to the real game and back, change the denoising steps
# (1 step: fast and blurry; 10: slow and sharp). Every finished episode is saved under `runs/notebook08/.../recordings`,
# in a dataset named after the environment and the controller.

# %%
widget = player_widget(player)
widget

# %% [markdown]
# The same player can be driven from code. Twenty steps by a "human" in the world model: FIRE once (in games that
# have it; it serves the ball in Breakout), then RIGHT:

# %%
A = player.action_names.index
frames = [player.frame]
for i in range(P.pick(smoke=4, course=20, paper=20)):
    player.press(A("FIRE") if i == 0 and "FIRE" in player.action_names else A("RIGHT"))
    frames.append(player.frame)
widget.refresh()
show_frames(frames[::4], [f"t={t}" for t in range(0, len(frames), 4)], scale=1.6, suptitle="playing in the world model")
print(player.status())

# %% [markdown]
# ## 3. The same actions, in the model and in the game
# A real episode first; then its actions replayed in the world model from the same four starting frames. Where the
# two films part ways is where the model is wrong (or where the game itself is random).

# %%
real = data.Dataset(root / "side_by_side")
for f in real.directory.glob("*.npz"):
    f.unlink()
real = data.Dataset(root / "side_by_side")
length = P.pick(smoke=12, course=60, paper=60)
skip = atari.OPENING_STEPS.get(GAME, 0)  # start after the game's opening, where the fighters are on stage
rng = np.random.default_rng(1)
data.Collector(atari.make_env(GAME, split="test", seed=5), real, policy=lambda obs: int(rng.integers(1, num_actions)), seed=5).collect(num_steps=skip + length, progress=False)
episode = real[real.ids[0]]
obs, act = episode.obs[skip:], episode.act[skip:]
with torch.no_grad():
    context = torch.from_numpy(obs[:4]).permute(0, 3, 1, 2).float().div(127.5).sub(1)[None]
    dream = wm.rollout(context, torch.from_numpy(act[: len(act) - 1])[None], num_steps=3)[0]
pairs = min(len(dream), len(obs) - 4)
animate([[obs[4 + t] for t in range(pairs)], [dream[t] for t in range(pairs)]], fps=8, titles=["real game", "world model, same actions"])


# %% [markdown]
# ## 4. Exploring the limits
# DIAMOND's paper shows a world model letting something happen that the real game does not — in its Atari examples,
# events the model has rarely seen get drawn wrongly, and a character can *jump again in mid-air* in a model of a
# game where that is impossible. Probe your model the same way: hold an action the data rarely shows for many steps,
# and compare with the real game doing the same. In Breakout: FIRE held (a random policy presses it a quarter of the
# time, never for long). In KungFuMaster: UP held (jump), which a random policy never holds for long; does the model
# bring the fighter down each time as the game does, or let him hang or jump again in mid-air? In Krull, the course
# run's game, and any game not named in the cell: FIRE held. (The model starts from a random replay segment, so each
# run of the cell starts somewhere else: run it again for another.)

# %%
def hold(environment, action, steps, warmup=0):
    player.set_environment(environment)
    player.set_controller("human")
    for _ in range(warmup):  # NOOPs first, where a game opens on an empty stage
        player.press(A("NOOP"))
    shots = [player.frame]
    for _ in range(steps):
        player.press(action)
        shots.append(player.frame)
    return shots

steps = P.pick(smoke=6, course=30, paper=30)
probe = {"KungFuMaster": "UP", "Qbert": "RIGHT"}.get(GAME, "FIRE")
# The world model starts from four frames of a random replay segment; the real game from its first frame, so only the
# game waits out its opening (dreaming those NOOPs first would blur the model's start instead)
model_frames, game_frames = hold("world model", A(probe), steps), hold("real test", A(probe), steps, atari.OPENING_STEPS.get(GAME, 0))
show_frames(model_frames[::5] + game_frames[::5], [f"model t={t}" for t in range(0, steps + 1, 5)] + [f"game t={t}" for t in range(0, steps + 1, 5)],
            columns=len(model_frames[::5]), scale=1.5, suptitle=f"{probe} held: world model (top) and real game (bottom)")

# %% [markdown]
# ## 5. Recordings, and a viewer
# Every finished episode went into a dataset named by environment and controller. Browse one with the viewer
# (next/previous episode, ±1 and ±10 steps, back to the first), and export any episode as a GIF or an MP4 video.

# %%
player.set_environment("world model")
while not player.done:
    player.press(int(np.random.default_rng(player.t).integers(num_actions)))
recordings = sorted(p for p in (root / "recordings").iterdir() if p.is_dir())
print("recorded datasets:", [f"{p.name} ({len(data.Dataset(p))} episodes)" for p in recordings])
viewer = DatasetViewer(data.Dataset(recordings[0]), player.action_names)
viewer_widget(viewer)

# %%
gif = save_gif(viewer.episode, root / "episode.gif", fps=10)
mp4 = save_mp4(viewer.episode, root / "episode.mp4", fps=10)
for path in (gif, mp4):
    print(f"saved {path} ({path.stat().st_size // 1024} kB)")

# %% [markdown]
# ## What to take away
# * A world model is a game engine you can play; playing it is the quickest way to see what it learned and what it
#   did not.
# * Fewer denoising steps make a faster, blurrier game; the agent trains with 3.
# * Comparing the model and the game on the same actions shows where imagination departs from reality — exactly the
#   places where an agent trained in imagination can learn the wrong thing.
