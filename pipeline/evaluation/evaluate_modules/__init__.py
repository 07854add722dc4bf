"""Offline copies of the `evaluate` metric modules the pipeline uses.

`evaluate.load("accuracy")` fetches the module's script from the Hub (evaluate-metric/accuracy). These folders hold
the same modules, trimmed to what image classification needs, so `evaluate.load(<folder>)` works with no network.
They compute through scikit-learn, as the Hub modules do. `top_k_accuracy` has no Hub twin in evaluate-metric;
it wraps `sklearn.metrics.top_k_accuracy_score` the same way.
"""
