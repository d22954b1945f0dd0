"""Errors cross into Python as exceptions with the library's messages: bad input is ValueError (and
leaves the object unchanged), an index out of range IndexError, a call in the wrong order
RuntimeError, learning state too large for the machine MemoryError."""
import numpy as np
import pytest

import sparse_rtrl as s


@pytest.fixture
def model():
    return s.Model.torch_like(8, 3, seed=1, surrogate=s.TriangularSurrogate(1.0, 0.3))


def test_step_input_of_wrong_size(model):
    rtrl = s.Rtrl(model)
    with pytest.raises(ValueError, match=r"Rtrl::step\(\): x must be a vector of size 3, received 4 x 1"):
        rtrl.step(np.zeros(4))
    assert rtrl.steps == 0
    with pytest.raises(ValueError, match=r"Inference.step\(\): x must be a vector \(1-D, or 2-D with one row or one "
                                         r"column\), received shape \(2, 3\)"):
        s.Inference(model).step(np.zeros((2, 3)))
    rtrl.step(np.zeros((1, 3)))  # a row vector is a vector
    assert rtrl.steps == 1


def test_non_finite_input_names_the_entry(model):
    rtrl = s.Rtrl(model)
    rtrl.step(np.ones(3))
    with pytest.raises(ValueError, match=r"x must be finite, received nan at \(1, 0\)"):
        rtrl.step(np.array([0.0, np.nan, 0.0]))
    assert rtrl.steps == 1


def test_non_finite_parameter_written_through_a_view_is_refused(model):
    rtrl = s.Rtrl(model)
    rtrl.step(np.ones(3))
    before = rtrl.state()
    model.parameters().bW[0] = np.nan  # reaches c_t: refused before anything changes
    with pytest.raises(ValueError, match="finite"):
        rtrl.step(np.ones(3))
    assert rtrl.steps == 1 and np.array_equal(rtrl.state(), before)


def test_model_construction_errors():
    p = s.init_torch_like(8, 3)
    with pytest.raises(ValueError, match=r"mask is for n = 5, d = 3 but the parameters have n = 8, d = 3"):
        s.Model(p, masks=s.ParameterMask.dense(5, 3))
    with pytest.raises(ValueError, match=r"layer 1 reads layer 0's output: it needs d = 8 inputs, received d = 3"):
        s.Model([p, s.init_torch_like(4, 3)])
    with pytest.raises(ValueError, match=r"events must be one value or one per layer \(2\), received 3"):
        s.Model([p, s.init_torch_like(4, 8)], events=[True, True, False])
    with pytest.raises(ValueError, match=r"eps must be finite and > 0, received 0"):
        s.TriangularSurrogate(1.0, 0.0)
    with pytest.raises(ValueError, match=r"density_W must be in \[0, 1\], received 1.5"):
        s.ParameterMask.random(8, 3, 1.5, 0.5)
    with pytest.raises(ValueError, match=r"R must be 24 x 8, received 24 x 7"):
        s.EgruParameters(p.W, p.R[:, :7], p.bW, p.bR, p.theta)
    with pytest.raises(ValueError, match="must keep its shape 24 x 3"):
        p.W = np.zeros((3, 3))


def test_load_state_dict_checks_everything_first(model):
    before = {k: v.copy() for k, v in model.state_dict().items()}
    bad = {k: v.copy() + 1 for k, v in before.items()}
    bad["weight_hh_l0"] = np.zeros((24, 7))
    with pytest.raises(ValueError, match=r"'weight_hh_l0' must have shape \(24, 8\), received \(24, 7\)"):
        model.load_state_dict(bad)
    bad["weight_hh_l0"] = before["weight_hh_l0"].copy()
    bad["bias_ih_l0"][3] = np.nan
    with pytest.raises(ValueError, match=r"'bias_ih_l0' must be finite, received nan at \(3, 0\)"):
        model.load_state_dict(bad)
    for k, v in model.state_dict().items():  # nothing was written
        assert np.array_equal(v, before[k]), k
    partial = {k: v for k, v in before.items() if k != "threshold_l0"}
    partial["weight_ih_l1"] = np.zeros((24, 8))
    with pytest.raises(ValueError, match="missing: threshold_l0; unexpected: weight_ih_l1"):
        model.load_state_dict(partial)
    assert model.load_state_dict(partial, strict=False) == (["threshold_l0"], ["weight_ih_l1"])


def test_wrong_call_order_is_runtime_error(model):
    with pytest.raises(RuntimeError, match=r"accumulate_gradient\(\): call step\(\) first"):
        s.Rtrl(model).accumulate_gradient(np.zeros(8))
    with pytest.raises(RuntimeError, match="forward"):
        s.Bptt(model).backward(np.zeros((5, 8)))
    pruner = s.MagnitudePruner(s.PruningSchedule(0.5, 0.5, 1))
    pruner.prune(model)
    with pytest.raises(RuntimeError, match="pruning events are done"):
        pruner.prune(model)


def test_indices_out_of_range_are_index_errors(model):
    rtrl = s.Rtrl(model)
    with pytest.raises(IndexError, match=r"layer must be in \[0, 1\), received 2"):
        rtrl.output(2)
    with pytest.raises(IndexError):
        model.parameters(1)
    with pytest.raises(IndexError, match=r"entry must be in \[0, 24\) x \[0, 3\), received \(24, 0\)"):
        rtrl.layout().column_of_W(24, 0)


def test_memory_refused_up_front_is_memory_error(model):
    with pytest.raises(MemoryError, match=r"RtrlStreams\(\): 1000000000000 streams need"):
        s.RtrlStreams(model, 10 ** 12)


def test_learner_and_training_options(model):
    with pytest.raises(ValueError, match=r"threads must be >= 1, received 0"):
        s.Rtrl(model, threads=0)
    with pytest.raises(ValueError, match=r"order must be >= 1, received 0"):
        s.Snap(model, 0)
    with pytest.raises(ValueError, match=r"learning_rate must be > 0 and finite, received -1"):
        s.Adam(learning_rate=-1.0)
    with pytest.raises(ValueError, match=r"momentum"):
        s.Sgd(learning_rate=0.1, nesterov=True)
    with pytest.raises(ValueError, match=r"target_rate must be in \[0, 1\], received 2"):
        s.ActivityRegularizer(2.0, 1.0)
    with pytest.raises(ValueError, match=r"events must be 0 or 1, received 0.5 at 1"):
        s.ActivityRegularizer(0.1, 1.0).loss(np.array([0.0, 0.5]))
    with pytest.raises(ValueError, match=r"target must be in \[0, 3\), received 3"):
        s.softmax_cross_entropy(np.zeros(3), 3)
    g = s.EgruParameters(8, 3)
    with pytest.raises(ValueError, match="must be EgruParameters or ReadoutParameters, received int"):
        s.clip_gradient_norm(1.0, g, 3)
    with pytest.raises(ValueError, match="at most 4 gradient sets, received 5"):
        s.clip_gradient_norm(1.0, g, g, g, g, g)
    with pytest.raises(IndexError, match=r"layer must be in \[0, 2\), got 5"):
        s.Inference(s.Model.torch_like([4, 4], 2)).output(layer=5)
    with pytest.raises(RuntimeError, match="an initial state is for one-layer models"):
        s.Inference(s.Model.torch_like([4, 4], 2)).reset(np.zeros(4))


def test_stack_needs_layer_for_gradient():
    rtrl = s.Rtrl(s.Model.torch_like([4, 3], 2))
    rtrl.step(np.ones(2))
    with pytest.raises(RuntimeError, match=r"the model is a stack of 2 layers: pass the layer"):
        rtrl.gradient()
    assert [g.units for g in rtrl.gradients()] == [4, 3]


@pytest.mark.parametrize("make", [
    lambda: s.ParameterMask.dense(2**62, 1),
    lambda: s.ParameterMask.dense(2**31, 2**40),
    lambda: s.ParameterMask.random(2**62, 1, 0.5, 0.5),
    lambda: s.Model.torch_like(2**62, 1),
])
def test_sizes_whose_products_overflow_are_refused(make):
    # ParameterMask.dense(2**62, 1) used to return a corrupt mask (3n wrapped) whose repr() crashed.
    with pytest.raises(ValueError, match=r"sizes too large: 3 \* n_units.* does not fit in Eigen::Index"):
        make()


def test_messages_escape_control_characters_of_names(tmp_path):
    odd = str(tmp_path / "bad\nname\x01.npz")
    with pytest.raises(OSError) as e:
        s.load_model(odd)
    assert "bad\\nname\\x01.npz" in str(e.value) and "\n" not in str(e.value) and "\x01" not in str(e.value)
    ck = s.Checkpoint().add(1, "v\n\x01")
    with pytest.raises(ValueError) as e:
        ck.add(2, "v\n\x01")
    assert "'v\\n\\x01' is taken" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(KeyError) as e:
        ck["w\n\x02"]
    message = e.value.args[0]  # str() of a KeyError is a repr, which escapes by itself
    assert "w\\n\\x02" in message and "\n" not in message and "\x02" not in message
