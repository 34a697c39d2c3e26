"""The synthetic world: deterministic, captions from the grammar, rendering agrees with the
truth."""
import numpy as np
import pytest

from nuwa_xl_jax.data import synthetic as S


def test_same_seed_same_episode_other_seed_differs():
    a, ca, _ = S.episode(3, 1, 400, (32, 32))
    b, cb, _ = S.episode(3, 1, 400, (32, 32))
    c, _, _ = S.episode(3, 2, 400, (32, 32))
    assert np.array_equal(a, b) and ca == cb
    assert not np.array_equal(a, c)


def test_long_episode_has_scenes_shots_and_every_action():
    truth = S.simulate(0, 3376)
    assert len(truth) == 3376 and len(truth.captions) == 3376
    assert truth.shot.max() >= 5 and len(np.unique(truth.scene)) >= 3
    assert set(np.unique(truth.action[truth.visible])) == set(range(len(S.ACTIONS)))
    # The cast persists: at most CAST_SIZE distinct characters ever appear.
    assert truth.visible.any(0).sum() <= S.CAST_SIZE


def test_captions_use_only_the_vocabulary_and_name_scene_and_subject():
    truth = S.simulate(1, 1000)
    tok = S.tokenizer(16)
    ids = tok(list(truth.captions))  # raises UnknownWordError on a word outside VOCABULARY
    assert ids.shape == (1000, 16) and (ids[:, -1] == tok.pad_token_id).all()
    for t in range(0, 1000, 37):
        cap = truth.captions[t]
        assert cap.startswith(S.CHARACTERS[truth.subject[t]] + " ")
        assert cap.endswith("in the " + S.SCENES[truth.scene[t]])
        assert S.ACTIONS[truth.action[t, truth.subject[t]]] in cap


def test_actions_move_characters_as_captioned():
    truth = S.simulate(2, 2000)
    for t in range(1, 2000):
        k = truth.subject[t]
        if truth.subject[t - 1] != k or truth.shot[t] != truth.shot[t - 1]:
            continue
        a = truth.action[t, k]
        dx, ds = truth.x[t, k] - truth.x[t - 1, k], truth.size[t, k] - truth.size[t - 1, k]
        if a == S.WALK_LEFT:
            assert dx < 0
        elif a == S.WALK_RIGHT:
            assert dx > 0
        elif a == S.GROW:
            assert ds > 0
        elif a == S.SHRINK:
            assert ds < 0
        elif a == S.STAND:
            assert dx == 0 and ds == 0


def _clear(truth, t, k, margin=0.02):
    """Character k fully inside frame t and not overlapping any other visible character."""
    half = truth.size[t, k] / 2
    if not (truth.x[t, k] - half > margin and truth.x[t, k] + half < 1 - margin
            and truth.y[t, k] - half > margin):
        return False
    for j in np.flatnonzero(truth.visible[t]):
        if j != k and abs(truth.x[t, j] - truth.x[t, k]) < half + truth.size[t, j] / 2 + margin \
                and abs(truth.y[t, j] - truth.y[t, k]) < half + truth.size[t, j] / 2 + margin:
            return False
    return True


def test_character_said_to_be_at_x_is_drawn_at_x():
    truth = S.simulate(4, 600)
    h, w = 48, 64
    frames = S.render(truth, (h, w))
    checked = 0
    for t in range(0, 600, 7):
        for k in np.flatnonzero(truth.visible[t]):
            if not _clear(truth, t, k):
                continue
            r, c = int(truth.y[t, k] * h), int(truth.x[t, k] * w)
            assert tuple(frames[t, r, c]) == tuple(S.CHARACTER_COLOURS[k]), (t, k)
            checked += 1
        # The background shows the scene's colours where no character is drawn.
        assert tuple(frames[t, 0, w - 1]) == tuple(S.SCENE_COLOURS[truth.scene[t], 0])
    assert checked > 20


def test_render_any_resolution_and_bad_input():
    truth = S.simulate(0, 10)
    assert S.render(truth, (24, 40)).shape == (10, 24, 40, 3)
    with pytest.raises(ValueError, match="at least 8x8"):
        S.render(truth, (4, 4))
    with pytest.raises(ValueError, match="positive integer"):
        S.simulate(0, 0)
