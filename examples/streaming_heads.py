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
# # Which heads could stream at long context?
#
# A head that only ever needs the last W tokens (and the first one, the attention sink) could keep
# a KV cache of W + 1 entries instead of the whole context. `headscope.context_needs` tries, for
# each head alone, windows smallest first, and keeps the smallest under which the model's loss on
# long documents (and on copying a needle of random tokens from far back) stays within 1%. It also
# scores each head as a retrieval head (Wu et al. 2024): when the model copies a needle token, how
# often is the head's strongest key that token in the first needle? Here: two layers of smollm2
# (18 heads) on 256-token stretches of text, to stay quick.

# %%
import headscope
from headscope.datasets.loading import shared_data

heads = ",".join(f"L{layer}.H{head}" for layer in (4, 18) for head in range(9))
dev = shared_data("ud_english_ewt/en_ewt-ud-dev.conllu")
result = headscope.context_needs("smollm2", dev, heads=heads, windows=(16, 64), tokens=256, needles=4,
                                 window_needles=1)
table = result.heads[["layer", "head", "smallest_window", "retrieval"]]
searched = table[table["layer"].isin([4, 18])]
print(f"{int(searched['smallest_window'].notna().sum())} of {len(searched)} searched heads can be windowed")
searched.sort_values("retrieval", ascending=False).round(2)

# %% [markdown]
# Retrieval is scored for every head in the same pass; the strongest retrieval heads of the whole
# model (only layers 4 and 18 had their windows searched here):

# %%
table.sort_values("retrieval", ascending=False).head(8).round(2)

# %% [markdown]
# The KV cache of one sequence if every windowed head kept only its window (bf16; under GQA a key/value
# head shrinks only when all its query heads can be windowed):

# %%
import pandas as pd

pd.DataFrame(result.kv)
