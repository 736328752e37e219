# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Induction heads, and what ablating them does
#
# An induction head completes a repeated pattern: on `[BOS] r r` (a random token sequence `r`
# shown twice) a token in the second copy attends to the token after its earlier occurrence.
# The `induction` task scores every head on generated sequences; then `headscope.ablate` removes
# the best three inside the model and measures the loss on the second copy (`induction-loss`),
# against removing three random heads.

# %%
import headscope

scores = headscope.analyze("smollm2", tasks="induction", bootstrap=300)
ind = scores.top("induction", relation="induction", k=5)[["layer", "head", "score", "ci_low", "ci_high"]]
ind.round(3)

# %%
result = headscope.ablate("smollm2", heads="top:induction:3", method="mean", measures=["induction-loss"],
                          random_draws=5, bootstrap=300)
result.table[["heads", "measure", "base", "ablated", "effect", "ci_low", "ci_high", "random_median",
              "ratio_to_random"]].round(3)

# %% [markdown]
# Removing the three best induction heads raises the loss on the repeated half far more than
# removing random heads (`ratio_to_random`): the attention pattern is causal evidence, not only a
# place where the heads look.
