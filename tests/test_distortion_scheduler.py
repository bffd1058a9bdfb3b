"""The distortion-aware scheduler (STMG's Algorithm 1): step by step on scripted
distortions, on real video with STMG's mask generator and with the runtime's frame
difference (GSVNet), and how users select schedulers."""
from __future__ import annotations

import numpy as np
import pytest

from vss_edge import runtime
from vss_edge.runtime.errors import VssEdgeError
from vss_edge.runtime.schedulers import DistortionAware, FixedInterval, FrameInfo, choose_scheduler


def algorithm_1(distortions: list[float], gamma_1: float = 2.0, gamma_2: float = 0.95) -> list[bool]:
    """The paper's pseudo-code, transcribed literally: d[i] = |m_sp;i| = distortion(I_i, I_{i-1})."""
    keys = [True]  # f0 <- key frame
    sigma = distortions[1]  # sigma <- |m_sp;1|
    first = True
    for i in range(1, len(distortions)):
        if distortions[i] > sigma:
            keys.append(True)
            sigma = gamma_1 * distortions[i]
        else:
            keys.append(False)
            sigma = (1.0 if first else gamma_2) * distortions[i]  # gamma_2;1 = 1
        first = False
    return keys


def _decisions(scheduler, distortions):
    scheduler.reset()
    return [scheduler.is_key(FrameInfo(i, 0, {"distortion": d})) for i, d in enumerate(distortions)]


SCRIPTS = {
    "rising": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
    "constant": [0.0] + [0.05] * 9,
    "spike": [0.0, 0.01, 0.01, 0.009, 0.5, 0.01, 0.01, 0.011, 0.2, 0.02],
    "falling": [0.0, 0.8, 0.6, 0.5, 0.45, 0.44, 0.5, 0.1],
    "random": list(np.random.default_rng(3).uniform(0.001, 0.1, 40)),
}


@pytest.mark.parametrize("name", SCRIPTS)
def test_reproduces_algorithm_1_step_by_step(name):
    d = SCRIPTS[name]
    assert _decisions(DistortionAware(floor=0.0), d) == algorithm_1(d)


def test_scripted_sequence_by_hand():
    # frame:     0     1     2     3     4     5     6
    d = [0.0, 0.10, 0.12, 0.20, 0.15, 0.15, 0.50]
    # 1: sigma = 0.10, not > -> non-key, sigma = 1 * 0.10
    # 2: 0.12 > 0.10 -> key, sigma = 0.24;  3: 0.20 <= 0.24 -> non-key, sigma = 0.19
    # 4: 0.15 <= 0.19 -> non-key, sigma = 0.1425; 5: 0.15 > 0.1425 -> key, sigma = 0.30; 6: 0.5 > 0.3 -> key
    assert _decisions(DistortionAware(), d) == [True, False, True, False, False, True, True]


def test_an_unchanged_frame_is_never_a_key_frame():
    # Float noise on repeated frames (1e-7) must not read as "more distorted than 0.95 x itself".
    d = [0.0, 0.01, 1e-7, 1.05e-7, 1.1e-7, 0.02, 1e-7]
    assert _decisions(DistortionAware(), d) == [True, False, False, False, False, True, False]


def test_a_missing_signal_is_a_clear_error():
    s = DistortionAware()
    with pytest.raises(VssEdgeError, match="distortion"):
        s.is_key(FrameInfo(1, 1, {}))


def _key_ratio(pipe, frames) -> float:
    pipe.reset()
    return float(np.mean([pipe.step(f).is_key for f in frames]))


@pytest.mark.parametrize("bundle", ["stmg_bundle", "gsvnet_bundle"])
def test_key_frame_ratio_rises_with_motion_on_real_video(bundle, sample_frames, request):
    """The real clip vs the same clip with each frame shown 4 times (a quarter of the motion
    per frame): repeated frames have no distortion, so only the changing frames can be keys."""
    pipe = runtime.load(request.getfixturevalue(bundle), device="cpu", scheduler="distortion")
    real = sample_frames[:24]
    slowed = [f for f in real[:12] for _ in range(4)]
    moving, still = _key_ratio(pipe, real), _key_ratio(pipe, slowed)
    assert still <= 0.25 < moving, (moving, still)


def test_choosing_schedulers():
    stmg = {"name": "distortion", "params": {"gamma_key": 3.0, "gamma_nonkey": 0.9}}
    s = choose_scheduler(stmg)
    assert isinstance(s, DistortionAware) and s.gamma_key == 3.0  # the bundle's parameters
    assert isinstance(choose_scheduler(stmg, interval=4), FixedInterval)  # --interval alone
    gsv = {"name": "fixed_interval", "params": {"interval": 5}}
    s = choose_scheduler(gsv, "distortion")
    assert isinstance(s, DistortionAware) and s.gamma_key == 2.0  # defaults, not the other scheduler's params
    with pytest.raises(VssEdgeError, match="--interval"):
        choose_scheduler(gsv, "distortion", interval=3)
    with pytest.raises(VssEdgeError, match="unknown scheduler"):
        choose_scheduler(gsv, "sometimes")


def test_a_key_frame_scheduler_on_tdnet_is_refused(tdnet_small):
    """TDNet has no key frames: the distortion scheduler (an object or its name) has no path(),
    and loading the pair fails with a message naming what is missing."""
    _, bundle = tdnet_small
    for scheduler in (DistortionAware(), "distortion"):
        with pytest.raises(VssEdgeError, match=r"does not fit method 'tdnet': it needs reset\(\) and path\(frame_info\)"):
            runtime.load(bundle, device="cpu", scheduler=scheduler)
