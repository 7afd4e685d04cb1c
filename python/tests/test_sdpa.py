"""ctx.sdpa against the float64 reference: masks, variants, views, fp16, errors, events."""
import numpy as np
import pyopencl as cl
import pyopencl.array as cla
import pytest

import clattn
import reference as ref
from conftest import close, dev


def qkv(rng, B=2, Hq=4, Hkv=2, Lq=13, Lk=29, D=16, Dv=None):
    Dv = Dv or D
    return (rng.standard_normal((B, Hq, Lq, D)), rng.standard_normal((B, Hkv, Lk, D)),
            rng.standard_normal((B, Hkv, Lk, Dv)))


@pytest.mark.parametrize('path', ['fused', 'unfused'])
@pytest.mark.parametrize('causal', [False, True, 'bottom_right'])
def test_causal_gqa(ctx, queue, rng, path, causal):
    q, k, v = qkv(rng, Dv=24)
    out, lse, ev = ctx.sdpa(dev(queue, q), dev(queue, k), dev(queue, v), causal=causal,
                            path=path, lse=True)
    ev.wait()
    want, want_lse, _ = ref.sdpa(q, k, v, causal=causal)
    close(out.get(), want)
    close(lse.get(), want_lse)


def test_mask_key_lengths_and_empty_rows(ctx, queue, rng):
    q, k, v = qkv(rng, Lq=9, Lk=9)
    mask = rng.standard_normal((9, 9))
    mask[4, :] = -np.inf                   # query 4 sees nothing
    for lengths in ([9, 0], dev(queue, [5, 9], np.int32)):   # host and device key lengths
        out, probs, ev = ctx.sdpa(dev(queue, q), dev(queue, k), dev(queue, v),
                                  mask=dev(queue, mask), key_lengths=lengths, probs=True)
        ev.wait()
        want, _, want_p = ref.sdpa(q, k, v, mask=mask,
                                   key_lengths=lengths if isinstance(lengths, list)
                                   else lengths.get())
        close(out.get(), want)
        close(probs.get(), want_p)
        assert np.all(out.get()[:, :, 4] == 0)


@pytest.mark.parametrize('path', ['fused', 'unfused'])
def test_model_variants(ctx, queue, rng, path):
    q, k, v = qkv(rng, Hq=4, Hkv=1, Lq=21, Lk=21)
    sinks = rng.standard_normal(4)
    kw = dict(causal=True, window=(5, None), window_keep_first=2, softcap=4.0, sinks=sinks)
    out, ev = ctx.sdpa(dev(queue, q), dev(queue, k), dev(queue, v), alibi=True, path=path, **kw)
    ev.wait()
    want, _, _ = ref.sdpa(q, k, v, alibi=ref.alibi_slopes(4), **kw)
    close(out.get(), want)
    np.testing.assert_allclose(clattn.alibi_slopes(6), ref.alibi_slopes(6), rtol=1e-6)


@pytest.mark.parametrize('causal', [True, 'bottom_right'])
def test_query_offset(ctx, queue, rng, causal):
    # queries placed 30 positions on (a block of a longer sequence), with a window and ALiBi
    q, k, v = qkv(rng, Hq=2, Hkv=2, Lq=16, Lk=48)
    kw = dict(causal=causal, window=(20, None), query_offset=30 if causal is True else -9)
    out, ev = ctx.sdpa(dev(queue, q), dev(queue, k), dev(queue, v), alibi=True, **kw)
    ev.wait()
    close(out.get(), ref.sdpa(q, k, v, alibi=ref.alibi_slopes(2), **kw)[0])


def test_offset_view(ctx, queue, rng):
    B, H, T, D = 2, 3, 11, 8
    big = rng.standard_normal((B + 1, H, T + 5, D))
    q = dev(queue, big)[1:, :, 5:, :]                # an offset and strides of a larger array
    assert q.offset > 0
    k, v = rng.standard_normal((2, B, H, T, D))
    out, ev = ctx.sdpa(q, dev(queue, k), dev(queue, v), causal=True)
    ev.wait()
    close(out.get(), ref.sdpa(big[1:, :, 5:, :], k, v, causal=True)[0])


def test_packed_views(ctx, queue, rng):
    # q, k, v as the three thirds of one fused projection output [B, T, 3·H·D], the output into
    # a strided view of a wider buffer: all packed [B, T, H·D] views split into H heads
    B, T, H, D = 2, 11, 3, 8
    qkv_host = rng.standard_normal((B, T, 3 * H * D))
    qkv_dev = dev(queue, qkv_host)
    q, k, v = (qkv_dev[:, :, i * H * D:(i + 1) * H * D] for i in range(3))
    outbuf = cla.zeros(queue, (B, T, H * D + 3), np.float32)
    out, ev = ctx.sdpa(q, k, v, num_heads=H, causal=True, out=outbuf[:, :, 3:])
    ev.wait()
    heads = [qkv_host[:, :, i * H * D:(i + 1) * H * D].reshape(B, T, H, D).transpose(0, 2, 1, 3)
             for i in range(3)]
    want = ref.sdpa(*heads, causal=True)[0]
    got = outbuf.get()
    close(got[:, :, 3:].reshape(B, T, H, D).transpose(0, 2, 1, 3), want)
    assert np.all(got[:, :, :3] == 0)                # nothing outside the view was written
    new, ev = ctx.sdpa(q, k, v, num_heads=H, causal=True)   # a new output is packed too
    ev.wait()
    assert new.shape == (B, T, H * D)
    close(new.get().reshape(B, T, H, D).transpose(0, 2, 1, 3), want)


def test_transposed_views(ctx, queue, rng):
    B, T, H, D = 2, 10, 2, 8
    x = rng.standard_normal((3, B, T, H, D))
    xd = dev(queue, x)
    q, k, v = (xd[i].transpose((0, 2, 1, 3)) for i in range(3))   # [B, H, T, D] views
    out, ev = ctx.sdpa(q, k, v, causal=True)
    ev.wait()
    qh, kh, vh = (x[i].transpose(0, 2, 1, 3) for i in range(3))
    close(out.get(), ref.sdpa(qh, kh, vh, causal=True)[0])


def test_fp16(ctx, queue, rng):
    q, k, v = (a.astype(np.float16) for a in qkv(rng))
    out, ev = ctx.sdpa(dev(queue, q, np.float16), dev(queue, k, np.float16),
                       dev(queue, v, np.float16), causal=True)
    ev.wait()
    assert out.dtype == np.float16
    close(out.get(), ref.sdpa(q, k, v, causal=True)[0], tol=2e-3)


def test_errors_raise_and_change_nothing(ctx, queue, rng):
    q, k, v = qkv(rng)
    out = cla.zeros(queue, q.shape, np.float32) + 7
    queue.finish()
    with pytest.raises(clattn.Error) as e:
        ctx.sdpa(dev(queue, q), dev(queue, k)[:, :, :, :8], dev(queue, v), out=out)
    assert e.value.name == 'CLATTN_ERROR_INVALID_SHAPE'
    assert 'shapes' in str(e.value)
    bad = [dict(causal='diagonal'), dict(path='fast'), dict(softcap=-1.0),
           dict(key_lengths=dev(queue, [1.0, 2.0])), dict(sinks=[0.0])]
    names = ['CLATTN_ERROR_INVALID_ARGUMENT', 'CLATTN_ERROR_INVALID_ARGUMENT',
             'CLATTN_ERROR_INVALID_ARGUMENT', 'CLATTN_ERROR_UNSUPPORTED_LAYOUT',
             'CLATTN_ERROR_VIEW_OUT_OF_BOUNDS']
    for kw, name in zip(bad, names):
        with pytest.raises(clattn.Error) as e:
            ctx.sdpa(dev(queue, q), dev(queue, k), dev(queue, v), out=out, **kw)
        assert e.value.name == name, kw
    with pytest.raises(clattn.Error) as e:
        ctx.sdpa(dev(queue, q, np.float64), dev(queue, k), dev(queue, v), out=out)
    assert e.value.name == 'CLATTN_ERROR_UNSUPPORTED_DTYPE'
    with pytest.raises(TypeError):
        ctx.sdpa(q, k, v)
    queue.finish()
    assert np.all(out.get() == 7)   # no call wrote anything


def test_events_on_out_of_order_queue(ctx, cl_context, rng):
    dev_ = cl_context.devices[0]
    if not dev_.queue_properties & cl.command_queue_properties.OUT_OF_ORDER_EXEC_MODE_ENABLE:
        pytest.fail('the device offers no out-of-order queue')
    ooo = cl.CommandQueue(cl_context, properties=cl.command_queue_properties
                          .OUT_OF_ORDER_EXEC_MODE_ENABLE)
    from pyopencl.elementwise import ElementwiseKernel
    twice = ElementwiseKernel(cl_context, 'float *y, const float *x', 'y[i] = 2.0f * x[i]')
    plus1 = ElementwiseKernel(cl_context, 'float *y, const float *x', 'y[i] = x[i] + 1.0f')
    q, k, v = qkv(rng, Lq=40, Lk=40)
    x = cla.to_device(ooo, q.astype(np.float32))
    ooo.finish()
    qd = cla.empty_like(x)
    e1 = twice(qd, x, wait_for=[])                       # the caller's kernel makes q
    out, e2 = ctx.sdpa(qd, dev(ooo, k), dev(ooo, v), causal=True, queue=ooo, wait_for=[e1])
    y = cla.empty_like(out)
    e3 = plus1(y, out, wait_for=[e2])                    # and consumes the output
    e3.wait()
    close(y.get(), ref.sdpa(2 * q, k, v, causal=True)[0] + 1)


def test_merge_and_sinks(ctx, queue, rng):
    q, k, v = qkv(rng, Hkv=4, Lk=30)
    sinks = rng.standard_normal(4)
    parts = []
    for lo, hi in ((0, 17), (17, 30)):
        o, l, ev = ctx.sdpa(dev(queue, q), dev(queue, k[:, :, lo:hi]), dev(queue, v[:, :, lo:hi]),
                            lse=True)
        parts += [o, l]
    out, lse, ev = ctx.merge(*parts)
    ev.wait()
    want, want_lse, _ = ref.sdpa(q, k, v)
    close(out.get(), want)
    close(lse.get(), want_lse)
    ctx.add_sinks(out, lse, sinks).wait()
    close(out.get(), ref.sdpa(q, k, v, sinks=sinks)[0])


def test_rope(ctx, queue, rng):
    x = rng.standard_normal((1, 2, 7, 8))
    y, ev = ctx.rope(dev(queue, x), out=cla.empty(queue, x.shape, np.float32), positions=[3])
    ev.wait()
    close(y.get(), ref.rope_neox(x, np.arange(3, 10)))


def test_workspace_and_prepare(ctx, queue, rng):
    q, k, v = qkv(rng)
    args = [dev(queue, a) for a in (q, k, v)]
    ctx.sdpa_prepare(*args, causal=True, path='unfused')
    need = ctx.sdpa_workspace_size(*args, causal=True, path='unfused')
    assert need >= q.shape[0] * q.shape[1] * q.shape[2] * k.shape[2] * 4   # the score matrix
    assert ctx.sdpa_workspace_size(*args, causal=True, path='fused') == 0
    scratch = cl.Buffer(ctx.cl_context, cl.mem_flags.READ_WRITE, need)
    out, ev = ctx.sdpa(*args, causal=True, path='unfused', workspace=scratch)
    ev.wait()
    close(out.get(), ref.sdpa(q, k, v, causal=True)[0])
    with pytest.raises(clattn.Error) as e:
        ctx.sdpa(*args, causal=True, path='unfused', workspace=cl.Buffer(ctx.cl_context, cl.mem_flags.READ_WRITE, need - 4))
    assert e.value.name == 'CLATTN_ERROR_WORKSPACE_TOO_SMALL'
