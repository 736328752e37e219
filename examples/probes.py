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
# # Probes with control tasks
#
# Do all heads together know a word's syntactic head, beyond what a single head shows? A linear
# probe on every head's attention between two words (Clark et al. §5) predicts each word's parent;
# a control task (Hewitt & Liang 2019) gives each word type a random but fixed target and trains the
# same probe. Selectivity, task accuracy minus control accuracy, says how much of the accuracy is
# the attention's and how much the probe's own memory.

# %%
import headscope
from headscope.datasets.loading import shared_data

train = shared_data("ud_english_ewt/en_ewt-ud-train.conllu")
test = shared_data("ud_english_ewt/en_ewt-ud-dev.conllu")
if train is None:                                     # no shared data: the bundled sample, split in two
    sample = headscope.load_sample()
    train, test = list(sample.sentences[:48]), list(sample.sentences[48:])
result = headscope.probe("minilm", train, test, max_train_sentences=300, max_test_sentences=150)
result.summary()

# %% [markdown]
# Read the `selectivity` column: the attention features' accuracy above the control's is what the
# heads know; a probe that scores as well on the control task has learnt word types, not syntax.
