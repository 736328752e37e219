"""Probes over all heads' attention: features, scikit-learn estimators, control tasks, experiments."""

from .estimators import ParentProbe, RelationProbe, relation_probe
from .experiment import ProbeResult, probe

from .features import ProbeData, collect_features

__all__ = ["ParentProbe", "RelationProbe", "ProbeData", "ProbeResult", "collect_features", "probe", "relation_probe"]
