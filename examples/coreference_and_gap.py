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
# # Coreference heads and GAP's gender bias
#
# Which heads link a mention to its antecedent? For every mention with an earlier mention in its
# gold cluster, a head predicts the earlier mention whose head word it attends to most; the
# accuracy is set against Clark et al.'s rule baselines (the nearest mention, the nearest with the
# same head word, a small sieve of rules). Then GAP (Webster et al. 2018): does the head that
# resolves pronouns do it as well for "she" as for "he"? Data: LitBank's sample and GAP's
# development split when the shared data is there, else the small example files of the docs.

# %%

import headscope
from headscope.datasets.loading import format_example, shared_data

litbank = shared_data("litbank_coref_sample") or format_example("example.conll")
gap = shared_data("gap_coreference/gap-development.tsv") or format_example("example.tsv")

coref = headscope.analyze("minilm", litbank, tasks="coref", bootstrap=300)
scores = coref.scores
heads = scores[(scores["metric"] == "accuracy") & scores["baseline"].isna() & scores["layer"].notna()]
best = heads.sort_values("score", ascending=False).groupby("relation").head(1)
bases = scores[(scores["metric"] == "accuracy") & scores["baseline"].notna()]
table = best[["relation", "layer", "head", "score", "ci_low", "ci_high", "n"]].merge(
    bases.pivot_table(index="relation", columns="baseline", values="score").reset_index(), on="relation")
table.round(3)

# %% [markdown]
# On LitBank the best heads resolve pronouns far better than the nearest mention and a little
# better than head-word matching, but not as well as the sieve of rules, as Clark et al. found
# for BERT-base on CoNLL-2012.
#
# GAP: each row has a pronoun and two names, one of which it refers to. The score is how often a
# head attends more to the right name; `gap` reports it for feminine and masculine pronouns and
# their ratio, the bias (1 is no bias).

# %%
g = headscope.analyze("minilm", gap, tasks="gap", max_sentences=400, bootstrap=300)
s = g.scores
overall = s[(s["relation"] == "all") & s["layer"].notna() & s["baseline"].isna()]
top = overall.nlargest(1, "score").iloc[0]
layer, head = int(top["layer"]), int(top["head"])
mine = s[(s["layer"] == layer) & (s["head"] == head) & s["baseline"].isna()]
print(f"best GAP head: L{layer}.H{head}; the nearest-name baseline beside it")
nearest = s[s["baseline"] == "nearest"][["relation", "score"]].rename(columns={"score": "nearest name"})
mine[["relation", "metric", "score", "ci_low", "ci_high", "n"]].merge(nearest, on="relation").round(3)

# %%
bias = mine[mine["relation"] == "bias"].iloc[0]
verdict = ("its 95% interval excludes 1: the head resolves one gender's pronouns better"
           if bias["ci_high"] < 1 or bias["ci_low"] > 1 else "its 95% interval includes 1: no evidence of a bias")
print(f"feminine/masculine accuracy ratio {bias['score']:.2f} [{bias['ci_low']:.2f}, {bias['ci_high']:.2f}]: {verdict}")
