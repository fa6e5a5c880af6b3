"""Diagonal Fisher information estimators for classification models.

For a model ``p(y | x, θ)`` and examples ``x_1..x_N`` (Kirkpatrick et al. 2017, https://arxiv.org/abs/1612.00796;
Kunstner et al. 2019 on empirical vs true Fisher, https://arxiv.org/abs/1905.12558):

* ``exact``:     ``F = 1/N Σ_i Σ_c p(c|x_i) (∇ log p(c|x_i))²``   -- the expectation over the model's predictions;
* ``sampled``:   ``F = 1/N Σ_i (∇ log p(ŷ_i|x_i))²`` with ``ŷ_i ~ p(·|x_i)`` -- an unbiased one-sample estimate of exact;
* ``empirical``: ``F = 1/N Σ_i (∇ log p(y_i|x_i))²`` with the true labels -- cheap, biased near a poor optimum.

``per_example=True`` squares each example's own gradient (the formulas above). Two exact implementations
(``per_example_impl``):

* ``"hooks"``: one ordinary forward + backward over the whole batch, with module hooks that compute, per layer, the
  sum over examples of the squared per-example gradients directly from the layer's input and output gradient (the
  idea of BackPACK's ``BatchGrad``/``SumGradSquared``, Dangel et al. 2020, https://arxiv.org/abs/1912.10985):
  ``nn.Linear`` (per-example ``Σ_t g_t a_tᵀ``), ``nn.Embedding`` (per-example segment sums of ``g`` over the
  positions holding each id; ``padding_idx`` gets nothing), ``nn.LayerNorm`` (``Σ_t g_t·x̂_t`` and ``Σ_t g_t``),
  ``nn.Conv2d`` (``Σ_l g_l u_lᵀ`` per group over the unfolded input ``u``: any stride, padding, padding mode,
  dilation, groups) and eval-mode ``nn.BatchNorm*d`` (running statistics). A parameter held directly by any other
  module (a ViT's ``cls_token`` / ``position_embeddings``, DINOv2's LayerScale) gets a per-example vjp of that module's
  forward alone (``vmap`` over ``vjp`` on its recorded inputs; the recomputed outputs must equal the batch's).
  The backward differentiates only with respect to the hooked layers' outputs, so the (batch) weight gradients are
  never formed. ``exact`` takes one backward per class, ``sampled`` one backward with the sampled labels.
* ``"vmap"``: ``torch.func`` (``vmap`` over ``grad``) for chunks of ``chunk_size`` examples, not a Python loop of
  batch-1 passes; it works for any model ``torch.func`` can trace, at several times the cost of one backward
  (it materialises every parameter's per-example gradient).

``"auto"`` (default) uses the hooks where they provably apply and the vmap path otherwise: every requested
parameter must belong to exactly one module (no tied weights; a parameter of the model itself is not covered),
each such module must run at most once per forward on inputs whose first dimension is the batch, and the autograd
graph must show no other use of the parameter (a parameter used outside its module, e.g. through ``F.linear``).
A module outside the closed-form types must output one batch-first tensor and treat the examples independently.
Inputs shared by the batch (BERT's ``position_ids`` of shape ``[1, T]``) are broadcast to the batch inside the hook;
a forward of two examples with and without the hooks checks once per call that this changes no output. When a
check fails the rest of the call falls back to vmap (a debug log line says why).

``per_example=False`` ("batched") squares the gradient of each batch's *mean* loss instead. For gradients that are
roughly independent across examples, ``E[(mean of B gradients)²] ≈ F / B``: the raw batched estimate is about ``B``
times smaller. With ``scale_batched=True`` (default) we multiply it by the batch size so that the same ``λ`` means the
same strength for every estimator; with ``scale_batched=False`` multiply λ by B yourself. The batched ``exact`` uses
``Σ_c (∇ 1/B Σ_i sqrt(p_ic) · log p_ic)²`` (equal to the per-example formula for B = 1).

Everything runs in eval mode (no dropout) on the *unwrapped* model, accumulates in float32, and under
``torch.distributed`` each rank takes every ``world_size``-th example; the sums are all-reduced and divided by the
total count, so the result equals the single-process Fisher over the same examples.
"""

from tl_hf.regularizers.fisher.driver import ESTIMATORS, estimate_fisher

__all__ = ["estimate_fisher", "ESTIMATORS"]
