"""MJCF of the table-top scene: a mocap-driven parallel-jaw gripper, a cube, a table and a fixed camera.

Design (chosen for reliable grasping in MuJoCo):
  * The hand is a free body with gravity compensation, welded (soft `weld` equality) to a mocap body. The env moves
    the mocap pose; the weld drags the hand there while contacts (table, cube) push back, like a compliant
    Cartesian controller. The hand frame origin is the tool centre point (TCP), midway between the fingertip pads;
    the fingers point along -z of the hand frame, so "gripper pointing down" is the identity orientation and the
    state's Euler angles are (0, 0, yaw) in normal use.
  * Two fingers on slide joints (along the hand's x axis), each driven by its own position actuator to the same
    target; equal gains centre a grasped cube between them. Finger opening q in [0, FINGER_TRAVEL] per finger
    (half the gap). Elliptic friction cones with a high impratio and condim 4 stop a held cube slipping or spinning.
  * The wrist is a short visual stub (no collision): a tall one hid the cube behind it from the camera and made the
    gripper outweigh the cube in image-space energies (a 4 cm gripper offset cost 3.9x a 4 cm cube offset in the
    demo encoder's latent L1; 2.6x with the stub).
  * Table top at z = 0. Shadows off (`shadowsize=0`, `castshadow=false`): rendering stays at hundreds of fps with EGL.
    Height cues come from flat "blob shadows" the env draws into the scene at render time (not simulated).
"""
from __future__ import annotations

import numpy as np

CUBE_HALF = 0.025  # cube half size (m): a 5 cm cube
HAND_GROUP = 1  # the hand's geoms are in this visual group (a render can hide them: what they occlude)
FINGER_TRAVEL = 0.042  # per-finger opening (m): the gap between pads spans 0 .. 8.4 cm
FINGER_BELOW_TCP = 0.02  # the fingertips reach this far below the TCP (m)
TABLE_HALF = 0.3  # the table top spans [-0.3, 0.3]^2 (m)
SUBSTEP = 0.005  # physics timestep (s)

# Camera: front-right, looking down at the workspace centre. Everything in the TCP workspace box
# (x, y in [-0.16, 0.16], z in [0.02, 0.16]) plus the gripper body stays inside the frame.
CAMERA_POS = (0.18, -0.45, 0.62)
CAMERA_TARGET = (0.0, 0.02, 0.05)
CAMERA_FOVY = 45.0


def _xyaxes(pos: tuple[float, ...], target: tuple[float, ...]) -> str:
    """MJCF `xyaxes` of a camera at `pos` looking at `target` with the world z axis up."""
    forward = np.asarray(target, float) - np.asarray(pos, float)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, forward)
    return " ".join(f"{v:.6f}" for v in np.concatenate([right, up]))


def tabletop_mjcf(offscreen_size: int = 640) -> str:
    """The scene's MJCF. `offscreen_size` sizes the offscreen framebuffer (must be >= the render size)."""
    f_half_z = 0.04  # finger half length
    f_center_z = f_half_z - FINGER_BELOW_TCP
    return f"""
<mujoco model="jepa_tabletop">
  <compiler angle="radian" autolimits="true"/>
  <option timestep="{SUBSTEP}" cone="elliptic" impratio="10" integrator="implicitfast"/>
  <visual>
    <global offwidth="{offscreen_size}" offheight="{offscreen_size}"/>
    <quality shadowsize="0"/>
    <headlight ambient="0.45 0.45 0.45" diffuse="0.45 0.45 0.45" specular="0 0 0"/>
  </visual>
  <worldbody>
    <light name="key" pos="0.2 -0.3 1.2" dir="-0.15 0.25 -1" diffuse="0.5 0.5 0.5" specular="0 0 0"
           castshadow="false"/>
    <geom name="floor" type="plane" pos="0 0 -0.5" size="4 4 0.1" rgba="0.3 0.33 0.38 1"
          contype="0" conaffinity="0"/>
    <geom name="table" type="box" pos="0 0 -0.025" size="{TABLE_HALF} {TABLE_HALF} 0.025"
          rgba="0.85 0.82 0.74 1" friction="0.5 0.005 0.0001"/>
    <camera name="front" pos="{' '.join(map(str, CAMERA_POS))}" xyaxes="{_xyaxes(CAMERA_POS, CAMERA_TARGET)}"
            fovy="{CAMERA_FOVY}"/>
    <body name="mocap" mocap="true" pos="0 0 0.12"/>
    <body name="hand" pos="0 0 0.12" gravcomp="1">
      <freejoint name="hand"/>
      <site name="tcp" pos="0 0 0" size="0.004" rgba="1 1 0 0"/>
      <geom name="palm" type="box" pos="0 0 0.075" size="0.065 0.022 0.014" rgba="0.12 0.35 0.9 1" mass="0.4"
            group="{HAND_GROUP}"/>
      <geom name="wrist" type="cylinder" pos="0 0 0.11" size="0.015 0.025" rgba="0.2 0.2 0.25 1"
            contype="0" conaffinity="0" mass="0.05" group="{HAND_GROUP}"/>
      <body name="finger_left" gravcomp="1">
        <joint name="finger_left" type="slide" axis="-1 0 0" range="0 {FINGER_TRAVEL}" damping="5" armature="0.01"/>
        <geom name="finger_left" type="box" pos="-0.01 0 {f_center_z}" size="0.01 0.016 {f_half_z}"
              rgba="0.1 0.1 0.12 1" mass="0.05" friction="1.5 0.02 0.002" condim="4" group="{HAND_GROUP}"/>
      </body>
      <body name="finger_right" gravcomp="1">
        <joint name="finger_right" type="slide" axis="1 0 0" range="0 {FINGER_TRAVEL}" damping="5" armature="0.01"/>
        <geom name="finger_right" type="box" pos="0.01 0 {f_center_z}" size="0.01 0.016 {f_half_z}"
              rgba="0.1 0.1 0.12 1" mass="0.05" friction="1.5 0.02 0.002" condim="4" group="{HAND_GROUP}"/>
      </body>
    </body>
    <body name="cube" pos="0.1 0.05 {CUBE_HALF}">
      <freejoint name="cube"/>
      <geom name="cube" type="box" size="{CUBE_HALF} {CUBE_HALF} {CUBE_HALF}" rgba="0.9 0.12 0.1 1" mass="0.1"
            friction="1.2 0.02 0.002" condim="4"/>
    </body>
  </worldbody>
  <contact>
    <exclude body1="finger_left" body2="finger_right"/>
  </contact>
  <equality>
    <weld name="hand_to_mocap" body1="mocap" body2="hand" solref="0.01 1"/>
  </equality>
  <actuator>
    <position name="finger_left" joint="finger_left" kp="300" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-30 30"/>
    <position name="finger_right" joint="finger_right" kp="300" ctrlrange="0 {FINGER_TRAVEL}" forcerange="-30 30"/>
  </actuator>
</mujoco>
"""
