import os
import zlib

import numpy as np
import pyopencl as cl
import pyopencl.array as cla
import pytest

import clattn


@pytest.fixture(scope='session')
def cl_context():
    return cl.create_some_context(interactive=False)


@pytest.fixture(scope='session')
def queue(cl_context):
    return cl.CommandQueue(cl_context)


@pytest.fixture(scope='session')
def ctx(queue):
    with clattn.Context(queue, cache_dir=os.environ.get('CLATTN_CACHE_DIR')) as c:
        yield c


@pytest.fixture
def rng(request):
    # a seed of each test's own, so that a failure reproduces alone
    return np.random.default_rng(zlib.crc32(request.node.name.encode()))


def dev(queue, a, dtype=np.float32):
    return cla.to_device(queue, np.ascontiguousarray(a, dtype=dtype))


def close(got, want, tol=2e-5):
    """|got - want| <= tol · max(1, |want|max), with NaN where NaN is wanted."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, (got.shape, want.shape)
    scale = max(1.0, float(np.nanmax(np.abs(np.where(np.isinf(want), 0, want)), initial=0)))
    same_inf = (np.isinf(want) & (got == want))
    err = np.where(same_inf, 0.0, np.abs(got - want))
    assert np.all(np.isfinite(err)), 'infinite or NaN where a number was expected'
    assert err.max(initial=0.0) <= tol * scale, f'max error {err.max():.3g} > {tol * scale:.3g}'
