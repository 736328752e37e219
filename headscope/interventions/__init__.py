"""Interventions inside the attention function: head ablation, importance and context windows.

``methods`` (the ablation methods' registry), ``edits`` (session edits), ``measures`` (what is measured, one
forward with an edit), ``batches`` (inputs), ``groups`` (which heads), ``ablate``, ``importance``, ``windows``
(window ablation), ``haystack`` (long documents and needles) and ``context`` (which heads need the whole context).
"""
