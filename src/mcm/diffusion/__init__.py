"""Layer 1: the diffusion math of the method as short pure functions over tensors.

No model classes, no RNG except an explicit generator, no gradient switches.
"""

from mcm.diffusion.consistency import (
    consistency_function,
    consistency_output,
    consistency_scalings,
)
from mcm.diffusion.guidance import cfg_guidance, guidance_scale_embedding, lcm_guidance
from mcm.diffusion.parametrization import (
    PREDICTION_TYPES,
    eps_to_x0,
    flow_to_eps,
    flow_to_x0,
    from_x0_eps,
    to_x0_eps,
    v_to_eps,
    v_to_x0,
    x0_to_eps,
)
from mcm.diffusion.sampling import (
    consistency_timesteps,
    sample_consistency,
    sample_consistency_ode,
    sample_ddim,
    sample_flow,
)
from mcm.diffusion.schedules import (
    BETA_SCHEDULES,
    FlowMatchingSchedule,
    NoiseSchedule,
    VPSchedule,
    add_noise,
    append_dims,
    is_flow_config,
    make_betas,
    rescale_zero_terminal_snr,
    schedule_from_config,
    shift_sigmas,
)
from mcm.diffusion.solvers import (
    ddim_previous_timestep,
    ddim_step,
    ddim_timesteps,
    flow_grid,
    flow_sigmas,
    skipping_step_grid,
    training_timesteps,
)

__all__ = [
    "flow_sigmas",
    "flow_grid",
    "shift_sigmas",
    "is_flow_config",
    "sample_flow",
    "sample_consistency_ode",
    "consistency_function",
    "BETA_SCHEDULES",
    "PREDICTION_TYPES",
    "FlowMatchingSchedule",
    "NoiseSchedule",
    "VPSchedule",
    "add_noise",
    "append_dims",
    "cfg_guidance",
    "consistency_output",
    "consistency_scalings",
    "consistency_timesteps",
    "ddim_previous_timestep",
    "ddim_step",
    "ddim_timesteps",
    "eps_to_x0",
    "flow_to_eps",
    "flow_to_x0",
    "from_x0_eps",
    "guidance_scale_embedding",
    "lcm_guidance",
    "make_betas",
    "rescale_zero_terminal_snr",
    "sample_consistency",
    "sample_ddim",
    "schedule_from_config",
    "skipping_step_grid",
    "training_timesteps",
    "to_x0_eps",
    "v_to_eps",
    "v_to_x0",
    "x0_to_eps",
]
