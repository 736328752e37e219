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
# # Trained against random-init, and comparing two runs
#
# A head that "tracks the previous token" might do so in any network of this shape: position
# embeddings alone can make it happen. `control="random-init"` scores the same architecture with
# re-initialised weights on the same data in the same run, so every score has a partner, and a
# role needs its lower bound above the best control head. `headscope.compare` then gives per-head
# differences with intervals.

# %%
import tempfile
from pathlib import Path

import headscope
from headscope.datasets.loading import shared_data

dev = shared_data("ud_english_ewt/en_ewt-ud-dev.conllu")
result = headscope.analyze("minilm", dev, tasks="syntax,positional", control="random-init",
                           max_sentences=300, bootstrap=300)
diff = headscope.compare(result)                      # trained − re-initialised, per head and measure
diff.summary()[["task", "relation", "direction", "heads", "mean_a", "mean_b", "higher_in_a", "higher_in_b",
                "largest", "largest_diff"]].head(12).round(3)

# %% [markdown]
# The heads that training changed most, with 95% intervals of the difference:

# %%
diff.top(8)[["task", "relation", "direction", "layer", "head", "score_a", "score_b", "diff", "ci_low",
             "ci_high"]].round(3)

# %% [markdown]
# Comparing two runs: two saved runs on the same data, head by head. Here smollm2 (a decoder) reads
# the sentences once with a BOS token first, as it was trained, and once without: where does its
# attention go when the sink it is used to is missing?

# %%
tmp = Path(tempfile.mkdtemp())
data = dev or headscope.load_sample()
with_bos = headscope.analyze("smollm2", data, tasks="positional", max_sentences=200, bootstrap=300)
without = headscope.analyze("smollm2", data, tasks="positional", max_sentences=200, bootstrap=300, prepend_bos=False)
with_bos.save(tmp / "bos", figures=False)
without.save(tmp / "no-bos", figures=False)
runs = headscope.compare(tmp / "bos", tmp / "no-bos")
runs.summary()[["relation", "heads", "mean_a", "mean_b", "mean_diff", "higher_in_a", "higher_in_b", "largest",
                "largest_diff"]].round(3)

# %% [markdown]
# In this comparison, without the BOS token the first word takes the sink's place (`first`, the
# mass on the first token, stays as high), while previous-token and self heads barely change; the
# mass spreads onto content words and punctuation (`content`, `punct`), which many heads
# now attend to more. `higher_in_b` counts the heads whose interval says so.
