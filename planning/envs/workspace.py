"""Control limits of the table-top gripper, shared by the env (planning.envs.tabletop) and the scripted policies
(planning.envs.policies): per-step action bounds and the range the commanded TCP pose is kept in."""
from __future__ import annotations

import numpy as np

from planning.envs import scene

MAX_DXYZ = 0.075  # m per control step
MAX_DROT = 0.25  # rad per control step and axis
MAX_DGRIP = 1.0  # closedness units per control step
MAX_TILT = 0.4  # |roll|, |pitch| of the commanded orientation (rad)
MAX_YAW = np.pi / 2
MAX_LEAD = 0.1  # commanded TCP stays within this L-inf distance of the actual TCP (m)
WORKSPACE_LOW = np.array([-0.16, -0.16, scene.FINGER_BELOW_TCP])
WORKSPACE_HIGH = np.array([0.16, 0.16, 0.16])
ACTION_HIGH = np.array([MAX_DXYZ] * 3 + [MAX_DROT] * 3 + [MAX_DGRIP], dtype=np.float32)
