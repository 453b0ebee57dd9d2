"""Full-ranking evaluation: metrics (pure functions), batched evaluation, reports."""

from advrec.evaluation.evaluate import Report, evaluate, evaluate_scores
from advrec.evaluation.metrics import METRICS, paired_test
from advrec.evaluation.ranking import top_k

__all__ = ["METRICS", "Report", "evaluate", "evaluate_scores", "paired_test", "top_k"]
