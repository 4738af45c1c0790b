"""diamond-lite: DIAMOND (Alonso et al., NeurIPS 2024), built piece by piece in a notebook course.

The course, one module per idea, in the notebooks' order (a student who finished notebook N can read its module):

    00  atari, data, scores          the Atari 100k protocol, replay data and segments, reference scores
    01  edm, sampler                 EDM preconditioning and loss; the Karras schedule, Euler and Heun
    02  unet, world_model            the frame-stacked U-Net and the world model (its autoregressive loss)
    04  ddpm                         the DDPM baseline of the paper's Section 5.1
    05  rew_end                      the reward/termination model
    06  imagination, actor_critic    the world model as an environment; λ-returns and the actor-critic
    07  config, train                the run's configuration and Algorithm 1, the full loop
    08  player                       playing inside the world model
    09  upsampler, engine            a neural game engine from recorded play: two stages, the upsampler

Tooling around it: ``component`` and ``optim`` (what the three trained models share), ``speedups`` (bf16 sampling
copy, torch.compile), ``run_folder`` (checkpoints, resume, the metrics log), ``evaluate`` (scores against the
published results), ``pretrain`` (the shipped checkpoints), ``bench`` (speed), ``memory``, ``faults``, ``viz``,
``assignments`` and ``run_notebooks`` (the course's own machinery). ``profile()`` tells every notebook which sizes and
budgets to use.
"""

from .profiles import COURSE_GAME, COURSE_RUN_GAME, PROFILES, Profile, profile

__all__ = ["COURSE_GAME", "COURSE_RUN_GAME", "PROFILES", "Profile", "profile"]
__version__ = "0.1.0"
